package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/rdsproxy/rdsproxy/client"
	"github.com/rdsproxy/rdsproxy/server"
)

// IdentityFlags configure the server's check of callers' identities.
type IdentityFlags struct {
	RequireIdentity bool   `help:"Refuse connections that carry no verified caller identity (clients older than identity send none: set false until every client is upgraded)." default:"true" negatable:"" env:"RDSPROXY_REQUIRE_IDENTITY"`
	ServerID        string `name:"server-id" help:"This server's id, which clients sign into their identity so it cannot be replayed to another server (default: the host name). Replicas behind one address share one." env:"RDSPROXY_SERVER_ID"`
	STSRegion       string `name:"sts-region" help:"Region of the STS endpoint that verifies identities (default: the AWS configuration's region, else the first --region, else us-east-1)." env:"RDSPROXY_STS_REGION"`
	STSEndpoint     string `name:"sts-endpoint" help:"STS endpoint URL (default: https://sts.REGION.amazonaws.com)." env:"RDSPROXY_STS_ENDPOINT,AWS_ENDPOINT_URL_STS"`
}

// identityConfig builds the server's identity settings. Identity is
// always verified when a client sends one; --require-identity=false only
// admits clients that send none.
func (c *ServerCmd) identityConfig(ctx context.Context, log *slog.Logger) (*server.IdentityConfig, error) {
	region := stsRegion(c.STSRegion, c.Region, func() string {
		if cfg, err := config.LoadDefaultConfig(ctx); err == nil {
			return cfg.Region
		}
		return ""
	})
	id := c.ServerID
	if id == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return nil, fmt.Errorf("no --server-id and no host name to default to: %v", err)
		}
		id = host
	}
	log.Debug("caller identity", "server_id", id, "sts_region", region, "required", c.RequireIdentity)
	return &server.IdentityConfig{ServerID: id, Region: region, Endpoint: c.STSEndpoint, Optional: !c.RequireIdentity}, nil
}

// stsRegion picks the STS region: the flag, else the AWS configuration's
// region (AWS_REGION: where the server runs, and where the Terraform
// modules put the sts VPC endpoint), else the first discovery region,
// else us-east-1. Discovery may list other regions first; their STS would
// be out of reach of a server whose only route to AWS is its VPC endpoints.
func stsRegion(flag string, discovery []string, configRegion func() string) string {
	if flag != "" {
		return flag
	}
	if r := configRegion(); r != "" {
		return r
	}
	if len(discovery) > 0 {
		return discovery[0]
	}
	return "us-east-1" // where the global STS endpoint lives
}

// identities signs caller identities with the same credentials as the
// IAM tokens; nil (no identity sent) when there are none.
func (f *SSMFlags) identities(ctx context.Context, log *slog.Logger) client.Identities {
	cfg, err := f.awsConfig(ctx)
	if err != nil || cfg.Credentials == nil {
		log.Debug("no AWS credentials for a caller identity", "err", err)
		return nil
	}
	return client.NewIdentitySigner(cfg.Credentials, nil)
}
