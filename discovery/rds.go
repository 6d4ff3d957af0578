package discovery

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/rds/types"
	"golang.org/x/sync/errgroup"
)

// RDSAPI is the part of *rds.Client the discovery uses: what the SDK's
// DescribeDBInstances and DescribeDBClusters paginators need.
type RDSAPI interface {
	rds.DescribeDBInstancesAPIClient
	rds.DescribeDBClustersAPIClient
}

var _ RDSAPI = (*rds.Client)(nil)

// maxParallelRegions bounds the regions described at the same time.
const maxParallelRegions = 4

// Source lists the PostgreSQL databases of every configured region:
// DescribeDBInstances (engines postgres and aurora-postgresql) and
// DescribeDBClusters (aurora-postgresql), all pages. It applies no rule;
// Policy does. A Source is immutable and safe for concurrent use.
type Source struct {
	regions  []string
	clients  []RDSAPI
	pageSize int32
}

// NewSource makes one client per region with newClient. pageSize is
// MaxRecords per request (20…100 in AWS); 0 leaves the service default.
func NewSource(regions []string, newClient func(region string) RDSAPI, pageSize int32) (*Source, error) {
	if len(regions) == 0 {
		return nil, fmt.Errorf("rds discovery needs at least one region")
	}
	if pageSize != 0 && (pageSize < 20 || pageSize > 100) {
		return nil, fmt.Errorf("rds page size %d is outside 20…100", pageSize)
	}
	s := &Source{regions: slices.Clone(regions), pageSize: pageSize}
	for i, r := range regions {
		if r == "" || slices.Contains(regions[:i], r) {
			return nil, fmt.Errorf("rds region %q is empty or listed twice", r)
		}
		s.clients = append(s.clients, newClient(r))
	}
	return s, nil
}

// Fetch describes every region and returns their databases, regions in the
// configured order. When some regions fail, it returns the others'
// databases with a *RegionsFailed: the Watcher keeps the failed regions'
// databases as they were last seen and applies what the others say (a tag
// removed, a database deleted), so that one unreachable region does not
// hold back a revocation in another.
func (s *Source) Fetch(ctx context.Context) ([]Database, error) {
	perRegion := make([][]Database, len(s.regions))
	errs := make([]error, len(s.regions))
	var g errgroup.Group
	g.SetLimit(maxParallelRegions)
	for i := range s.regions {
		g.Go(func() error {
			perRegion[i], errs[i] = s.fetchRegion(ctx, i)
			return nil
		})
	}
	g.Wait()
	failed := &RegionsFailed{}
	for i, err := range errs {
		if err != nil {
			failed.Regions = append(failed.Regions, s.regions[i])
			failed.errs = append(failed.errs, err)
		}
	}
	switch {
	case len(failed.Regions) == 0:
		return slices.Concat(perRegion...), nil
	case len(failed.Regions) == len(s.regions):
		return nil, failed
	}
	failed.Answered = len(s.regions) - len(failed.Regions)
	return slices.Concat(perRegion...), failed
}

// RegionsFailed is the error of a Fetch in which some regions could not
// be described. When others answered (Answered), Fetch returns their
// databases with it.
type RegionsFailed struct {
	Regions  []string // in the configured order
	Answered int      // the regions described without an error
	errs     []error  // one for each of Regions
}

func (e *RegionsFailed) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap gives each region's error (IsThrottle looks at them).
func (e *RegionsFailed) Unwrap() []error { return e.errs }

func (s *Source) fetchRegion(ctx context.Context, i int) ([]Database, error) {
	region, client := s.regions[i], s.clients[i]
	dbs, err := s.instances(ctx, region, client)
	if err != nil {
		return nil, fmt.Errorf("describe rds instances in %s: %w", region, err)
	}
	clusters, err := s.clusters(ctx, region, client)
	if err != nil {
		return nil, fmt.Errorf("describe rds clusters in %s: %w", region, err)
	}
	return append(dbs, clusters...), nil
}

func (s *Source) maxRecords() *int32 {
	if s.pageSize == 0 {
		return nil
	}
	return aws.Int32(s.pageSize)
}

func (s *Source) instances(ctx context.Context, region string, client RDSAPI) ([]Database, error) {
	in := &rds.DescribeDBInstancesInput{
		Filters:    []types.Filter{{Name: aws.String("engine"), Values: []string{"postgres", "aurora-postgresql"}}},
		MaxRecords: s.maxRecords(),
	}
	var out []Database
	p := rds.NewDescribeDBInstancesPaginator(client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for i := range page.DBInstances {
			out = append(out, fromInstance(region, &page.DBInstances[i]))
		}
	}
	return out, nil
}

func (s *Source) clusters(ctx context.Context, region string, client RDSAPI) ([]Database, error) {
	in := &rds.DescribeDBClustersInput{
		Filters:    []types.Filter{{Name: aws.String("engine"), Values: []string{"aurora-postgresql"}}},
		MaxRecords: s.maxRecords(),
	}
	var out []Database
	p := rds.NewDescribeDBClustersPaginator(client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for i := range page.DBClusters {
			out = append(out, fromCluster(region, &page.DBClusters[i]))
		}
	}
	return out, nil
}

func fromInstance(region string, in *types.DBInstance) Database {
	db := Database{
		Region:     region,
		Kind:       KindInstance,
		Identifier: aws.ToString(in.DBInstanceIdentifier),
		Engine:     aws.ToString(in.Engine),
		Status:     aws.ToString(in.DBInstanceStatus),
		IAMAuth:    aws.ToBool(in.IAMDatabaseAuthenticationEnabled),
		Cluster:    aws.ToString(in.DBClusterIdentifier),
		Tags:       tagMap(in.TagList),
	}
	if in.Endpoint != nil {
		db.Endpoint = hostPort(aws.ToString(in.Endpoint.Address), aws.ToInt32(in.Endpoint.Port))
	}
	return db
}

func fromCluster(region string, c *types.DBCluster) Database {
	port := aws.ToInt32(c.Port)
	return Database{
		Region:         region,
		Kind:           KindCluster,
		Identifier:     aws.ToString(c.DBClusterIdentifier),
		Engine:         aws.ToString(c.Engine),
		Status:         aws.ToString(c.Status),
		IAMAuth:        aws.ToBool(c.IAMDatabaseAuthenticationEnabled),
		Endpoint:       hostPort(aws.ToString(c.Endpoint), port),
		ReaderEndpoint: hostPort(aws.ToString(c.ReaderEndpoint), port),
		Tags:           tagMap(c.TagList),
	}
}

// hostPort joins an AWS address and port, or returns "" when AWS has not
// assigned them yet.
func hostPort(host string, port int32) string {
	if host == "" || port == 0 {
		return ""
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

func tagMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
