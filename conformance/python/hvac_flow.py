"""hvac (the Python Vault client, unchanged) against ca-server's Vault-compatible API.

Driven by conformance/tests/vault_api.rs, which starts the server and passes:
VAULT_ADDR, CA_BUNDLE, ROOT_TOKEN, SA_PUBLIC_KEY (PEM), SA_JWT (a projected service-account
token for default/app), CSR_FILE (an ECDSA CSR for app.example.test).
"""
import os

import hvac

url = os.environ["VAULT_ADDR"]
ca = os.environ["CA_BUNDLE"]
root = hvac.Client(url=url, token=os.environ["ROOT_TOKEN"], verify=ca)
assert root.is_authenticated(), "lookup-self with the root token"
health = root.sys.read_health_status(method="GET")
assert health["sealed"] is False and health["initialized"] is True, health
assert root.sys.read_health_status().status_code == 200  # hvac's default: HEAD

# Roles: create, read, list, delete.
root.secrets.pki.create_or_update_role(
    "web",
    {"allowed_domains": "example.test", "allow_subdomains": True, "key_type": "any", "max_ttl": "72h", "ttl": "24h"},
    mount_point="pki_int",
)
role = root.secrets.pki.read_role("web", mount_point="pki_int")["data"]
assert role["allowed_domains"] == ["example.test"] and role["allow_subdomains"] is True, role
root.secrets.pki.create_or_update_role("scratch", {"allow_any_name": True}, mount_point="pki_int")
assert set(root.secrets.pki.list_roles(mount_point="pki_int")["data"]["keys"]) == {"web", "scratch"}
root.secrets.pki.delete_role("scratch", mount_point="pki_int")
assert root.secrets.pki.list_roles(mount_point="pki_int")["data"]["keys"] == ["web"]

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
assert login["auth"]["metadata"]["service_account_namespace"] == "default", login
assert k8s.is_authenticated()

# AppRole login.
root.auth.approle.create_or_update_approle("deployer", token_policies=["pki-user"], token_ttl="10m")
role_id = root.auth.approle.read_role_id("deployer")["data"]["role_id"]
secret_id = root.auth.approle.generate_secret_id("deployer")["data"]["secret_id"]
app = hvac.Client(url=url, verify=ca)
app.auth.approle.login(role_id=role_id, secret_id=secret_id)
assert app.is_authenticated()

# Sign (kubernetes identity) and issue (AppRole identity).
csr = open(os.environ["CSR_FILE"]).read()
signed = k8s.secrets.pki.sign_certificate("web", csr, "app.example.test", mount_point="pki_int")["data"]
assert signed["certificate"].startswith("-----BEGIN CERTIFICATE-----"), signed
issued = app.secrets.pki.generate_certificate("web", "gen.example.test", extra_params={"key_type": "ec"}, mount_point="pki_int")["data"]
assert "PRIVATE KEY" in issued["private_key"] and issued["private_key_type"] == "ec", issued

# The AppRole token may not touch roles.
try:
    app.secrets.pki.create_or_update_role("evil", {"allow_any_name": True}, mount_point="pki_int")
    raise AssertionError("an unprivileged token changed a role")
except hvac.exceptions.Forbidden:
    pass

# List (the LIST verb), read, revoke.
serials = root.secrets.pki.list_certificates(mount_point="pki_int")["data"]["keys"]
assert signed["serial_number"] in serials and issued["serial_number"] in serials, serials
cert = root.secrets.pki.read_certificate(signed["serial_number"], mount_point="pki_int")["data"]
assert cert["certificate"].strip() == signed["certificate"].strip()
revoked = root.secrets.pki.revoke_certificate(signed["serial_number"], mount_point="pki_int")["data"]
assert revoked["revocation_time"] > 0
assert root.secrets.pki.read_certificate(signed["serial_number"], mount_point="pki_int")["data"]["revocation_time"] > 0

# The CRL lists the revoked certificate.
crl = root.secrets.pki.read_crl(mount_point="pki_int")
assert "BEGIN X509 CRL" in crl, crl

# The CA, as text.
ca_pem = root.secrets.pki.read_ca_certificate(mount_point="pki_int")
assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")
chain = root.secrets.pki.read_ca_certificate_chain(mount_point="pki_int")
assert chain.count("BEGIN CERTIFICATE") == 2
print("hvac flow: ok")
