# Sourced by bench.sh and profile.sh: installs the test bed's parts if
# missing, starts PostgreSQL and exports what csi-bench reads
# (VCP_BAO_BIN, VCP_TEST_PG_URL, VCP_GO_DRIVER, VCP_PYTHON; and
# KUBEBUILDER_ASSETS when set, for the real kube-apiserver). Run from the
# repository's root.
scripts/testbed.sh install
scripts/testbed.sh pg-start >/dev/null
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_TEST_PG_URL VCP_GO_DRIVER VCP_PYTHON
