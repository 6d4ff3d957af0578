package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"go.yaml.in/yaml/v3"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/ssmendpoint"
)

// World regions, the deny rule the sandbox server runs with, and the
// name its EC2 instance is tagged with (rdsproxy:server=sandbox).
const (
	WorldRegion2 = "eu-west-1"
	WorldDeny    = "env=restricted"
	WorldServer  = "sandbox"
)

// WorldDatabases are the RDS databases moto holds in the sandbox: some
// served, some not, for every reason docs/architecture.md §3 names.
func WorldDatabases() []MotoDatabase {
	enabled := func(extra ...string) map[string]string {
		tags := map[string]string{"rdsproxy:enabled": "true", "rdsproxy:db-name": DatabaseApp}
		for i := 0; i+1 < len(extra); i += 2 {
			tags[extra[i]] = extra[i+1]
		}
		return tags
	}
	return []MotoDatabase{
		{Region: Region, Identifier: "orders", IAM: true, Tags: enabled("rdsproxy:users", UserIAM+","+UserIAMOther, "rdsproxy:local-port", "15432")},
		{Region: Region, Identifier: "reporting-replica", IAM: true, Tags: enabled("rdsproxy:name", "reporting", "rdsproxy:read-only", "true")},
		{Region: Region, Identifier: "analytics", Cluster: true, Members: 1, IAM: true, Tags: enabled()},
		{Region: Region, Identifier: "restricted", IAM: true, Tags: enabled("env", "restricted")},
		{Region: Region, Identifier: "legacy", IAM: false, Tags: enabled()},
		{Region: Region, Identifier: "scratch", IAM: true},
		{Region: WorldRegion2, Identifier: "orders", IAM: true, Tags: enabled()},
	}
}

// World is the whole sandbox of docs/architecture.md §7 on one machine: PostgreSQL,
// the RDS IAM emulator impersonating every database moto holds, and moto
// itself. Demo, benchmarks and end-to-end tests share it.
type World struct {
	Dir      string
	Postgres *Postgres
	Emulator *Emulator
	Moto     *Moto
	// Endpoints of every database in moto, each mapped to the emulator.
	DialMap map[string]string
	// CAFile holds the sandbox CA (PEM) that signed the emulator's certificate.
	CAFile string
	// SSM is the Session Manager endpoint; its agent runs on Instance and
	// forwards to 127.0.0.1:<the port a session asks for>.
	SSM      *ssmendpoint.Endpoint
	Instance string
	// STS verifies the callers' identities for the server (ServerEnv
	// points it there); it knows every STSPrincipals key.
	STS     *STS
	closers []func() error
}

// StartWorld starts PostgreSQL, moto (seeded with WorldDatabases) and the
// emulator in dir. On error everything already started is stopped.
func StartWorld(ctx context.Context, dir string, log io.Writer, logger *slog.Logger) (_ *World, err error) {
	w := &World{Dir: dir} // not the result, which is nil on error
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if w.Postgres, err = StartPostgres(ctx, dir, log); err != nil {
		return nil, err
	}
	w.closers = append(w.closers, w.Postgres.Close)
	if w.Moto, err = StartMoto(ctx, dir, log); err != nil {
		return nil, err
	}
	w.closers = append(w.closers, w.Moto.Close)
	if err = w.Moto.Seed(ctx, WorldDatabases()...); err != nil {
		return nil, fmt.Errorf("seed moto: %w", err)
	}
	endpoints, err := w.Moto.Endpoints(ctx, Region, WorldRegion2)
	if err != nil {
		return nil, err
	}
	w.Emulator, err = StartEmulator(ctx, EmulatorConfig{Postgres: w.Postgres, CA: w.Postgres.CA(), Endpoints: endpoints, Logger: logger})
	if err != nil {
		return nil, err
	}
	w.closers = append(w.closers, w.Emulator.Close)
	w.DialMap = make(map[string]string, len(endpoints))
	for _, e := range endpoints {
		w.DialMap[e] = w.Emulator.Addr()
	}
	w.CAFile = filepath.Join(dir, "sandbox-ca.pem")
	if err = w.Postgres.CA().WriteCAFile(w.CAFile); err != nil {
		return nil, err
	}
	if w.Instance, err = w.Moto.RunServerInstance(ctx, Region, WorldServer); err != nil {
		return nil, err
	}
	if w.SSM, err = ssmendpoint.Start(ctx, ssmendpoint.Config{Targets: []string{w.Instance}, Logger: logger}); err != nil {
		return nil, err
	}
	w.closers = append(w.closers, w.SSM.Close)
	if w.STS, err = StartSTS(ctx, STSConfig{Logger: logger}); err != nil {
		return nil, err
	}
	w.closers = append(w.closers, w.STS.Close)
	return w, nil
}

// RunServerInstance starts a running EC2 instance in moto tagged
// rdsproxy:server=name, as the Terraform module's instances are.
func (m *Moto) RunServerInstance(ctx context.Context, region, name string) (string, error) {
	out, err := ec2.NewFromConfig(m.AWSConfig(region)).RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12c6146b"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: ec2types.InstanceTypeT3Micro,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{{Key: aws.String("rdsproxy:server"), Value: aws.String(name)}}}},
	})
	if err != nil {
		return "", fmt.Errorf("run server instance: %w", err)
	}
	return aws.ToString(out.Instances[0].InstanceId), nil
}

// Regions are the regions the sandbox server discovers.
func (w *World) Regions() []string { return []string{Region, WorldRegion2} }

// ServerEnv is the environment for an rdsproxy server that discovers
// databases in moto.
func (w *World) ServerEnv() []string {
	return []string{
		"AWS_ENDPOINT_URL_RDS=" + w.Moto.Endpoint(),
		"RDSPROXY_STS_ENDPOINT=" + w.STS.URL(),
		"AWS_ACCESS_KEY_ID=" + MotoAccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + MotoSecretAccessKey,
		"AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
}

// ClientEnv is the environment for rdsproxy connect: the sandbox identity
// the emulator knows, the SSM and EC2 endpoints for --via ssm, and the
// sandbox STS the server verifies identities with, so that rdsproxy
// doctor's credential check names the identity the server sees (moto's
// STS answers every caller as its own user/moto).
func (w *World) ClientEnv() []string {
	return []string{
		"AWS_ENDPOINT_URL_SSM=" + w.SSM.URL(),
		"AWS_ENDPOINT_URL_EC2=" + w.Moto.Endpoint(),
		"AWS_ENDPOINT_URL_STS=" + w.STS.URL(),
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_REGION=" + Region,
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
	}
}

// WriteServerConfig writes an rdsproxy server configuration file for this
// world: discovery in both regions, the deny rule, dial overrides to the
// emulator and the sandbox CA.
func (w *World) WriteServerConfig(path, listen, admin string) error {
	cfg := map[string]any{
		"listen":     listen,
		"admin-addr": admin,
		"region":     w.Regions(),
		"deny-tag":   []string{WorldDeny},
		"map":        w.DialMap,
		"ca-file":    w.CAFile,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Close stops everything in reverse order.
func (w *World) Close() error {
	var errs []error
	for _, c := range slices.Backward(w.closers) {
		errs = append(errs, c())
	}
	w.closers = nil
	return errors.Join(errs...)
}

// Endpoints lists the host:port of every database endpoint moto holds in
// the regions: instances, cluster writers and cluster readers.
func (m *Moto) Endpoints(ctx context.Context, regions ...string) ([]string, error) {
	var out []string
	for _, region := range regions {
		c := m.RDS(region)
		inst, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{})
		if err != nil {
			return nil, fmt.Errorf("describe instances in %s: %w", region, err)
		}
		for _, i := range inst.DBInstances {
			if i.Endpoint != nil {
				out = append(out, joinEndpoint(aws.ToString(i.Endpoint.Address), aws.ToInt32(i.Endpoint.Port)))
			}
		}
		cl, err := c.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{})
		if err != nil {
			return nil, fmt.Errorf("describe clusters in %s: %w", region, err)
		}
		for _, k := range cl.DBClusters {
			port := aws.ToInt32(k.Port)
			for _, host := range []string{aws.ToString(k.Endpoint), aws.ToString(k.ReaderEndpoint)} {
				if host != "" {
					out = append(out, joinEndpoint(host, port))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func joinEndpoint(host string, port int32) string {
	if port == 0 {
		port = 5432
	}
	return strings.ToLower(host) + ":" + strconv.Itoa(int(port))
}
