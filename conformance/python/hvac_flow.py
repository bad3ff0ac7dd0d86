"""hvac (the Python Vault client, unchanged) against ca-server's Vault-compatible API.

Driven by conformance/tests/vault_api.rs, which starts the server and passes:
VAULT_ADDR, CA_BUNDLE, ROOT_TOKEN, SA_PUBLIC_KEY (PEM), SA_JWT (a projected service-account
token for default/app), CSR_FILE (an ECDSA CSR for app.example.test).

Every check goes through `check`, which exits non-zero: bare `assert`s would vanish under
`python -O` and the run would still print "hvac flow: ok". The CRL is parsed and its signature
checked with `cryptography` (installed with certbot). Prints "revoked: <serial>" for the caller.
"""
import os
import sys

import hvac
from cryptography import x509


def check(condition, what):
    if not condition:
        sys.exit(f"hvac flow FAILED: {what}")


def serial_int(vault_serial):
    return int(vault_serial.replace(":", ""), 16)


url = os.environ["VAULT_ADDR"]
ca = os.environ["CA_BUNDLE"]
root = hvac.Client(url=url, token=os.environ["ROOT_TOKEN"], verify=ca)
check(root.is_authenticated(), "lookup-self with the root token")
health = root.sys.read_health_status(method="GET")
check(health["sealed"] is False and health["initialized"] is True, f"health: {health}")
check(root.sys.read_health_status().status_code == 200, "health with HEAD, hvac's default")

# Roles: create, read, list, delete.
root.secrets.pki.create_or_update_role(
    "web",
    {"allowed_domains": "example.test", "allow_subdomains": True, "key_type": "any", "max_ttl": "72h", "ttl": "24h"},
    mount_point="pki_int",
)
role = root.secrets.pki.read_role("web", mount_point="pki_int")["data"]
check(role["allowed_domains"] == ["example.test"] and role["allow_subdomains"] is True, f"role: {role}")
root.secrets.pki.create_or_update_role("scratch", {"allow_any_name": True}, mount_point="pki_int")
check(
    set(root.secrets.pki.list_roles(mount_point="pki_int")["data"]["keys"]) == {"web", "scratch"},
    "both roles listed",
)
root.secrets.pki.delete_role("scratch", mount_point="pki_int")
check(root.secrets.pki.list_roles(mount_point="pki_int")["data"]["keys"] == ["web"], "scratch deleted")

root.sys.create_or_update_policy(
    "pki-user", 'path "pki_int/sign/web" { capabilities = ["update"] }\npath "pki_int/issue/web" { capabilities = ["update"] }'
)

# Kubernetes login with a projected service-account token.
root.auth.kubernetes.configure(
    kubernetes_host="https://kubernetes.default.svc",
    pem_keys=[os.environ["SA_PUBLIC_KEY"]],
    issuer="https://kubernetes.default.svc.cluster.local",
)
root.auth.kubernetes.create_role(
    "app", bound_service_account_names=["app"], bound_service_account_namespaces=["default"],
    policies=["pki-user"], audience="ca-server", ttl="10m",
)
k8s = hvac.Client(url=url, verify=ca)
login = k8s.auth.kubernetes.login(role="app", jwt=os.environ["SA_JWT"])
check(login["auth"]["metadata"]["service_account_namespace"] == "default", f"login: {login}")
check(k8s.is_authenticated(), "the kubernetes token works")

# AppRole login.
root.auth.approle.create_or_update_approle("deployer", token_policies=["pki-user"], token_ttl="10m")
role_id = root.auth.approle.read_role_id("deployer")["data"]["role_id"]
secret_id = root.auth.approle.generate_secret_id("deployer")["data"]["secret_id"]
app = hvac.Client(url=url, verify=ca)
app.auth.approle.login(role_id=role_id, secret_id=secret_id)
check(app.is_authenticated(), "the AppRole token works")

# Sign (kubernetes identity) and issue (AppRole identity).
csr = open(os.environ["CSR_FILE"]).read()
signed = k8s.secrets.pki.sign_certificate("web", csr, "app.example.test", mount_point="pki_int")["data"]
check(signed["certificate"].startswith("-----BEGIN CERTIFICATE-----"), f"signed: {signed}")
issued = app.secrets.pki.generate_certificate("web", "gen.example.test", extra_params={"key_type": "ec"}, mount_point="pki_int")["data"]
check("PRIVATE KEY" in issued["private_key"] and issued["private_key_type"] == "ec", f"issued: {issued}")

# The AppRole token may not touch roles, and the refused write left no role behind.
try:
    app.secrets.pki.create_or_update_role("evil", {"allow_any_name": True}, mount_point="pki_int")
    check(False, "an unprivileged token changed a role")
except hvac.exceptions.Forbidden:
    pass
check(root.secrets.pki.list_roles(mount_point="pki_int")["data"]["keys"] == ["web"], "no role evil")

# List (the LIST verb), read, revoke.
serials = root.secrets.pki.list_certificates(mount_point="pki_int")["data"]["keys"]
check(signed["serial_number"] in serials and issued["serial_number"] in serials, f"listed: {serials}")
cert = root.secrets.pki.read_certificate(signed["serial_number"], mount_point="pki_int")["data"]
check(cert["certificate"].strip() == signed["certificate"].strip(), "the certificate read back")
revoked = root.secrets.pki.revoke_certificate(signed["serial_number"], mount_point="pki_int")["data"]
check(revoked["revocation_time"] > 0, f"revoke: {revoked}")
check(
    root.secrets.pki.read_certificate(signed["serial_number"], mount_point="pki_int")["data"]["revocation_time"] > 0,
    "revocation_time on the certificate",
)

# The CA, as text.
ca_pem = root.secrets.pki.read_ca_certificate(mount_point="pki_int")
check(ca_pem.startswith("-----BEGIN CERTIFICATE-----"), "CA PEM")
chain = root.secrets.pki.read_ca_certificate_chain(mount_point="pki_int")
check(chain.count("BEGIN CERTIFICATE") == 2, "issuing CA and root")

# The CRL, signed by that CA, lists the revoked certificate and not the other one.
crl = x509.load_pem_x509_crl(root.secrets.pki.read_crl(mount_point="pki_int").encode())
check(crl.is_signature_valid(x509.load_pem_x509_certificate(ca_pem.encode()).public_key()), "CRL signed by the CA")
check(
    crl.get_revoked_certificate_by_serial_number(serial_int(signed["serial_number"])) is not None,
    "the revoked serial is in the CRL",
)
check(
    crl.get_revoked_certificate_by_serial_number(serial_int(issued["serial_number"])) is None,
    "the other serial is not in the CRL",
)
print("revoked:", signed["serial_number"])
print("hvac flow: ok")
