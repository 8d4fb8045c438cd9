# vault policy write aud-app examples/custom-audience/policy.hcl
path "secret/data/app" {
  capabilities = ["read"]
}
