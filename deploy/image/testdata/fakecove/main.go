// Command fakecove stands in for cove in the assembler's tests: a small Go binary with the same
// -X main.version / main.commit variables.
package main

import "fmt"

var (
	version = "dev"
	commit  = ""
)

func main() { fmt.Println(version, commit) }
