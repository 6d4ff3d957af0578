package sandbox

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	"github.com/aws/aws-sdk-go-v2/service/rds/types"
	"golang.org/x/sync/errgroup"
)

// MotoDatabase is an RDS DB instance, or with Cluster an Aurora
// PostgreSQL cluster, to create in moto.
type MotoDatabase struct {
	Region     string
	Identifier string
	// Cluster creates an aurora-postgresql DB cluster (writer and reader
	// endpoints) instead of an instance.
	Cluster bool
	// Engine of an instance; "" means postgres.
	Engine string
	// IAM enables IAM database authentication.
	IAM  bool
	Tags map[string]string
	// Stopped stops the database once created.
	Stopped bool
	// Members adds this many aurora-postgresql instances to a cluster,
	// named IDENTIFIER-1…N (untagged); the first is the writer.
	Members int
}

// seedParallel bounds concurrent create requests (moto serves each in
// its own thread).
const seedParallel = 8

// RDS is an RDS client for this moto in region.
func (m *Moto) RDS(region string) *rds.Client {
	return rds.NewFromConfig(m.AWSConfig(region))
}

// Seed creates dbs in moto, a few at a time.
func (m *Moto) Seed(ctx context.Context, dbs ...MotoDatabase) error {
	clients := map[string]*rds.Client{}
	for _, db := range dbs {
		if clients[db.Region] == nil {
			clients[db.Region] = m.RDS(db.Region)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(seedParallel)
	for _, db := range dbs {
		g.Go(func() error { return seedOne(ctx, clients[db.Region], db) })
	}
	return g.Wait()
}

func seedOne(ctx context.Context, c *rds.Client, db MotoDatabase) error {
	if db.Cluster {
		return seedCluster(ctx, c, db)
	}
	engine := db.Engine
	if engine == "" {
		engine = "postgres"
	}
	_, err := c.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
		DBInstanceIdentifier:            aws.String(db.Identifier),
		DBInstanceClass:                 aws.String("db.t4g.micro"),
		Engine:                          aws.String(engine),
		AllocatedStorage:                aws.Int32(20),
		MasterUsername:                  aws.String("postgres"),
		MasterUserPassword:              aws.String("sandbox-password"),
		EnableIAMDatabaseAuthentication: aws.Bool(db.IAM),
		Tags:                            motoTags(db.Tags),
	})
	if err != nil && !instanceExists(ctx, c, db.Identifier) {
		return fmt.Errorf("create moto instance %s/%s: %w", db.Region, db.Identifier, err)
	}
	if db.Stopped {
		_, err = c.StopDBInstance(ctx, &rds.StopDBInstanceInput{DBInstanceIdentifier: aws.String(db.Identifier)})
		if err != nil {
			return fmt.Errorf("stop moto instance %s/%s: %w", db.Region, db.Identifier, err)
		}
	}
	return nil
}

func seedCluster(ctx context.Context, c *rds.Client, db MotoDatabase) error {
	_, err := c.CreateDBCluster(ctx, &rds.CreateDBClusterInput{
		DBClusterIdentifier:             aws.String(db.Identifier),
		Engine:                          aws.String("aurora-postgresql"),
		MasterUsername:                  aws.String("postgres"),
		MasterUserPassword:              aws.String("sandbox-password"),
		EnableIAMDatabaseAuthentication: aws.Bool(db.IAM),
		Tags:                            motoTags(db.Tags),
	})
	if err != nil && !clusterExists(ctx, c, db.Identifier) {
		return fmt.Errorf("create moto cluster %s/%s: %w", db.Region, db.Identifier, err)
	}
	for i := range db.Members {
		id := fmt.Sprintf("%s-%d", db.Identifier, i+1)
		_, err := c.CreateDBInstance(ctx, &rds.CreateDBInstanceInput{
			DBInstanceIdentifier: aws.String(id),
			DBClusterIdentifier:  aws.String(db.Identifier),
			DBInstanceClass:      aws.String("db.r6g.large"),
			Engine:               aws.String("aurora-postgresql"),
		})
		if err != nil {
			return fmt.Errorf("create moto cluster member %s/%s: %w", db.Region, id, err)
		}
	}
	if db.Stopped {
		_, err = c.StopDBCluster(ctx, &rds.StopDBClusterInput{DBClusterIdentifier: aws.String(db.Identifier)})
		if err != nil {
			return fmt.Errorf("stop moto cluster %s/%s: %w", db.Region, db.Identifier, err)
		}
	}
	return nil
}

// A slow moto (a loaded machine) can make the SDK retry a create that
// had succeeded; the retry then fails as a duplicate (for clusters, of the
// automatic snapshot). These say whether the first attempt took.
func instanceExists(ctx context.Context, c *rds.Client, id string) bool {
	out, err := c.DescribeDBInstances(ctx, &rds.DescribeDBInstancesInput{DBInstanceIdentifier: aws.String(id)})
	return err == nil && len(out.DBInstances) == 1
}

func clusterExists(ctx context.Context, c *rds.Client, id string) bool {
	out, err := c.DescribeDBClusters(ctx, &rds.DescribeDBClustersInput{DBClusterIdentifier: aws.String(id)})
	return err == nil && len(out.DBClusters) == 1
}

// MotoARN is the ARN moto gives a DB instance or (cluster) DB cluster.
func MotoARN(region, identifier string, cluster bool) string {
	kind := "db"
	if cluster {
		kind = "cluster"
	}
	return fmt.Sprintf("arn:aws:rds:%s:%s:%s:%s", region, MotoAccountID, kind, identifier)
}

// RetagDatabase sets the tags in set and removes the keys in remove on a
// DB instance or (cluster) DB cluster.
func (m *Moto) RetagDatabase(ctx context.Context, region, identifier string, cluster bool, set map[string]string, remove ...string) error {
	c := m.RDS(region)
	arn := aws.String(MotoARN(region, identifier, cluster))
	if len(set) > 0 {
		if _, err := c.AddTagsToResource(ctx, &rds.AddTagsToResourceInput{ResourceName: arn, Tags: motoTags(set)}); err != nil {
			return fmt.Errorf("tag moto %s: %w", *arn, err)
		}
	}
	if len(remove) > 0 {
		if _, err := c.RemoveTagsFromResource(ctx, &rds.RemoveTagsFromResourceInput{ResourceName: arn, TagKeys: remove}); err != nil {
			return fmt.Errorf("untag moto %s: %w", *arn, err)
		}
	}
	return nil
}

// motoTags turns a map into SDK tags, sorted by key for stable requests.
func motoTags(m map[string]string) []types.Tag {
	var tags []types.Tag
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(m[k])})
	}
	return tags
}
