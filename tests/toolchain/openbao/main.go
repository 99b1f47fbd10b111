// Command bao builds the OpenBao server used by the plugin's integration tests.
//
// OpenBao's own go.mod carries replace directives, so `go install` of it is
// refused; a wrapper module is allowed because replace directives of a
// dependency are ignored. The pinned commit is OpenBao's v2.4.0 release tag.
package main

import (
	"os"

	"github.com/openbao/openbao/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
