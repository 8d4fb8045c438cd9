# Sourced by bench.sh and profile.sh: installs the test bed's parts if
# missing, unpacks the envtest assets, starts PostgreSQL and exports what
# csi-bench reads (KUBEBUILDER_ASSETS, VCP_BAO_BIN, VCP_TEST_PG_URL,
# VCP_GO_DRIVER, VCP_PYTHON). Run from the repository's root.
scripts/testbed.sh install
KUBEBUILDER_ASSETS="$(scripts/testbed.sh envtest)"
export KUBEBUILDER_ASSETS
scripts/testbed.sh pg-start >/dev/null
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_TEST_PG_URL VCP_GO_DRIVER VCP_PYTHON
