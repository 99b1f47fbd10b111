// Package buildinfo tells which Argo CD release a binary was built from.
package buildinfo

import "runtime/debug"

// Modules of one Argo CD release, in the order they are looked up: Argo CD
// itself, then its gitops-engine (tagged with the same version), which is all
// goyaml-json links.
var Modules = []string{
	"github.com/argoproj/argo-cd/v3",
	"github.com/argoproj/argo-cd/gitops-engine/v3",
}

// ArgoCDVersion returns the Argo CD version recorded in the binary's build
// information (e.g. "v3.6.2"), or "unknown".
func ArgoCDVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, path := range Modules {
		for _, dep := range info.Deps {
			if dep.Path != path {
				continue
			}
			if dep.Replace != nil {
				return dep.Replace.Version
			}
			return dep.Version
		}
	}
	return "unknown"
}
