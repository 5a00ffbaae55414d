// Command overlay prints the `go build -overlay` file for the filter's wasip1
// build (see package wasmbuild). Run it from the module root:
//
//	go run ./filter/wasmbuild/overlay > build/overlay.json
package main

import (
	"fmt"
	"os"

	"github.com/mtlsgate/mtlsgate/filter/wasmbuild"
)

func main() {
	b, err := wasmbuild.Overlay(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "overlay:", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(b, '\n'))
}
