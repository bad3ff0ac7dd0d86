#!/usr/bin/env bash
# Regenerates the CSR fixtures with the openssl CLI (an independent encoder). Run from this folder.
set -euo pipefail
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
req() { openssl req -new -outform DER "$@"; }

# Istio agent style: RSA-2048, empty subject, one SPIFFE URI SAN.
openssl genrsa -out "$tmp/rsa.key" 2048 2>/dev/null
req -key "$tmp/rsa.key" -subj "/" -addext "subjectAltName=critical,URI:spiffe://cluster.local/ns/default/sa/httpbin" -out rsa2048-istio.der

# csi-driver-spiffe style: ECDSA P-256, only a SPIFFE URI.
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/p256.key"
req -key "$tmp/p256.key" -subj "/" -addext "subjectAltName=critical,URI:spiffe://cluster.local/ns/sandbox/sa/app" -out p256-spiffe.der

# cert-manager style with NameConstraints (spec.nameConstraints) and DNS/IP SANs, CN set.
req -key "$tmp/p256.key" -subj "/CN=web.default.svc" \
  -addext "subjectAltName=DNS:web.default.svc,DNS:web.default.svc.cluster.local,IP:10.96.0.10" \
  -addext "nameConstraints=critical,permitted;DNS:.svc.cluster.local" \
  -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
  -addext "extendedKeyUsage=serverAuth" -out cert-manager-nameconstraints.der

# ECDSA P-384 and Ed25519 server requests.
openssl ecparam -name secp384r1 -genkey -noout -out "$tmp/p384.key"
req -key "$tmp/p384.key" -subj "/CN=p384.example.com" -addext "subjectAltName=DNS:p384.example.com" -out p384.der
openssl genpkey -algorithm ed25519 -out "$tmp/ed.key"
req -key "$tmp/ed.key" -subj "/CN=ed.example.com" -addext "subjectAltName=DNS:ed.example.com" -out ed25519.der

# Two URI SANs: must be refused by the spiffe profile.
req -key "$tmp/p256.key" -subj "/" -addext "subjectAltName=URI:spiffe://cluster.local/ns/a/sa/one,URI:spiffe://cluster.local/ns/a/sa/two" -out two-uris.der

# A valid request with its last signature byte flipped, and one cut short.
cp p256-spiffe.der bad-signature.der
python3 - <<'PY'
data = bytearray(open("bad-signature.der", "rb").read())
data[-1] ^= 0x01
open("bad-signature.der", "wb").write(bytes(data))
open("truncated.der", "wb").write(open("p384.der", "rb").read()[:120])
PY
