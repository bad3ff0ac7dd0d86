//! Minimal DER writing for the few structures rcgen does not model (PKCS#8 wrapping of legacy
//! keys, authorityInfoAccess, name constraints with URI subtrees).

/// One DER TLV with a definite length.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// `SEQUENCE { … }` of already-encoded elements.
pub fn sequence(elements: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &elements.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_encode_in_long_form() {
        let out = tlv(0x04, &[0u8; 300]);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(out.len(), 304);
        assert_eq!(tlv(0x05, &[]), vec![0x05, 0x00]);
    }
}
