// Command argocd-cmp-server is Argo CD's Config Management Plugin sidecar
// server, built on its own for the plugin's tests (the real argocd image is a
// multi-call binary of every Argo CD component; this is only the cmp-server).
//
// It runs github.com/argoproj/argo-cd/v3/cmd/argocd-cmp-server/commands
// unchanged, prepared the way Argo CD's cmd/main.go prepares it (klog through
// logrus, cobra's own error and usage printing off). Argo CD's main also turns
// gRPC's DNS SRV lookups off (util/grpc.DisableSRVLookups); they are off here
// already, because the package that turns them on (gRPC's grpclb balancer) is
// not linked into this smaller binary, and DisableSRVLookups panics when it
// finds them off. The one addition is a --version flag that prints the Argo CD
// module version this binary was built from, so that scripts/install-tools can
// check it without starting a server.
//
// Flags and environment are Argo CD's: --config-dir-path (the directory that
// holds plugin.yaml), --loglevel/ARGOCD_CMP_SERVER_LOGLEVEL,
// --logformat/ARGOCD_CMP_SERVER_LOGFORMAT, ARGOCD_PLUGINSOCKFILEPATH (socket
// directory), ARGOCD_CMP_WORKDIR (work directory, wiped at start).
package main

import (
	"fmt"
	"os"

	"k8s.io/klog/v2"

	"github.com/argoproj/argo-cd/v3/cmd/argocd-cmp-server/commands"
	"github.com/argoproj/argo-cd/v3/util/log"

	"avpplugin.local/toolchain/argocd/internal/buildinfo"
)

func main() {
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))

	command := commands.NewCommand()
	command.Version = buildinfo.ArgoCDVersion()
	command.SilenceErrors = true
	command.SilenceUsage = true
	if err := command.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "argocd-cmp-server: %v\n", err)
		os.Exit(1)
	}
}
