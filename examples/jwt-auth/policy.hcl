# vault policy write jwt-app examples/jwt-auth/policy.hcl
path "secret/data/app" {
  capabilities = ["read"]
}
