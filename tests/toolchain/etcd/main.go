// Command etcd builds the etcd server used by the plugin's integration tests (the storage of
// the real kube-apiserver that they start on loopback).
//
// etcd's own main module (go.etcd.io/etcd/v3) and go.etcd.io/etcd/server/v3 carry replace
// directives pointing at sibling directories, so neither can be `go install`ed. This wrapper
// depends on go.etcd.io/etcd/server/v3, whose requirements name the released versions of the
// other etcd modules, and runs the same entry point as etcd's main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
