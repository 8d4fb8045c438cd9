# vault policy write web examples/pki/policy.hcl
path "pki/issue/web" {
  capabilities = ["update"]
}
