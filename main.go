// Command rdsproxy reaches IAM-authenticated PostgreSQL databases on AWS
// RDS and Aurora in private subnets. See the README.
package main

import (
	"os"

	"github.com/rdsproxy/rdsproxy/cli"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3"; see
// buildVersion for builds without it.
var version = "dev"

func main() {
	os.Exit(cli.Run(os.Args[1:], cli.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Version: buildVersion(version)}))
}
