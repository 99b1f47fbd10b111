// Command kube-apiserver builds the Kubernetes API server used by the plugin's integration
// tests (a real API server on loopback, backed by a real etcd).
//
// k8s.io/kubernetes's go.mod points its staging modules (k8s.io/api, k8s.io/apiserver, ...)
// at ./staging/src/... with replace directives, so `go install` of it is refused. A wrapper
// module may depend on it: the replace directives of a dependency are ignored, and this
// module's go.mod pins every staging module to the v0.37.x release that matches
// k8s.io/kubernetes v1.37.x instead. The body is cmd/kube-apiserver's main.
package main

import (
	"os"
	_ "time/tzdata" // for timeZone support in CronJob, as in cmd/kube-apiserver

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
