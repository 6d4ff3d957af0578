package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rdsproxy/rdsproxy/internal/sandbox"
)

// TestReplicasSSM: one `rdsproxy connect --via ssm` reaching a server with
// two instances, through an instance replacement. Connections spread over
// both instances and cancels work on each; while a checksummed COPY runs
// on one, the other drains (SIGTERM: its sessions get 57P01), is
// terminated (its agent goes away) and a new tagged instance appears. The
// COPY completes intact, new connections land on the new instance,
// cancels work there too, and the same client process served it all.
func TestReplicasSSM(t *testing.T) {
	const server = "replicas"
	ctx := context.Background()
	world := startTestWorld(t)
	srvA := startBinaryServer(t, world, "--drain-timeout", "2s")
	srvB := startBinaryServer(t, world, "--drain-timeout", "2s")
	a, b := addInstance(t, world, server, srvA), addInstance(t, world, server, srvB)
	rc := startReplicaClient(t, world, server, "orders")

	// Spread: by fewest streams, four connections take two per instance.
	on := map[string][]*pgx.Conn{}
	for range 4 {
		conn, id := rc.connect(t, world, a, b)
		on[id] = append(on[id], conn)
	}
	if len(on[a]) != 2 || len(on[b]) != 2 {
		t.Fatalf("connections per instance: %s %d, %s %d; want two each", a, len(on[a]), b, len(on[b]))
	}
	cancelOn(t, world, on[a][0], a)
	cancelOn(t, world, on[b][0], b)

	// A COPY on b that stops half-way, at a row waiting for an advisory
	// lock the test holds, until the replacement is over.
	const rows, lockKey = 100_000, 4242
	query := fmt.Sprintf(`COPY (SELECT i, md5(i::text) FROM generate_series(1, %d) i
		WHERE CASE WHEN i = %d THEN pg_advisory_lock_shared(%d) IS NOT NULL ELSE true END) TO STDOUT`, rows, rows/2, lockKey)
	holder := worldSuperuser(t, world)
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		t.Fatal(err)
	}
	type copied struct {
		sum []byte
		n   int64
		err error
	}
	copyDone := make(chan copied, 1)
	go func() {
		h := sha256.New()
		cw := &countWriter{w: h}
		_, err := on[b][1].PgConn().CopyTo(ctx, cw, query)
		copyDone <- copied{h.Sum(nil), cw.n, err}
	}()
	waitFor(t, replicaGuard, "the COPY half-way, waiting for the lock", func() bool {
		select {
		case got := <-copyDone:
			t.Fatalf("the COPY ended before the lock was released: %d bytes, %v", got.n, got.err)
		default:
		}
		return copyWaiting(t, world)
	})

	// Drain a: its sessions, busy, end with 57P01 when the drain time is up.
	const busy = "busy while a drains"
	drained := make(chan error, len(on[a]))
	for _, conn := range on[a] {
		go func() {
			_, err := conn.Exec(ctx, "SELECT pg_sleep(60) /* "+busy+" */")
			drained <- err
		}()
	}
	waitFor(t, replicaGuard, "sessions busy on "+a, func() bool { return activeQueries(t, world, busy) == len(on[a]) })
	srvA.cmd.Process.Signal(syscall.SIGTERM)
	for range on[a] {
		select {
		case err := <-drained:
			pgErr(t, err, "57P01", "server is shutting down")
		case <-time.After(replicaGuard):
			t.Fatalf("a session on the draining %s did not end", a)
		}
	}
	select {
	case <-srvA.done:
	case <-time.After(replicaGuard):
		t.Fatal("the drained server did not exit")
	}

	// a goes away with its instance; its successor c appears.
	if err := world.TerminateServerInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	streamsOnA := world.SSM.TargetStreams(a)
	srvC := startBinaryServer(t, world, "--drain-timeout", "2s")
	c := addInstance(t, world, server, srvC)
	waitFor(t, replicaGuard, "the client to use the new instance "+c, func() bool {
		return rc.logged("using this instance of the server", c)
	})
	if !rc.logged("this instance of the server is no longer listed healthy; new connections go elsewhere, open ones end with its drain", a) {
		t.Errorf("the client did not say why it left %s:\n%s", a, rc.log.String())
	}

	// New connections: the first on c (b carries the COPY and another
	// session), then by fewest streams; none reaches a.
	var onC []*pgx.Conn
	for i := range 3 {
		conn, id := rc.connect(t, world, a, b, c)
		if i == 0 && id != c {
			t.Fatalf("a new connection went to %s while %s carries none", id, c)
		}
		if id == c {
			onC = append(onC, conn)
		}
	}
	if n := world.SSM.TargetStreams(a); n != streamsOnA {
		t.Errorf("%d streams reached the terminated %s", n-streamsOnA, a)
	}
	cancelOn(t, world, onC[0], c)
	cancelOn(t, world, on[b][0], b)

	// The COPY finishes, byte for byte what PostgreSQL sends directly.
	if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey); err != nil {
		t.Fatal(err)
	}
	var got copied
	select {
	case got = <-copyDone:
	case <-time.After(replicaGuard):
		t.Fatal("the COPY on the surviving instance did not finish")
	}
	if got.err != nil {
		t.Fatalf("the COPY on %s during the replacement: %v", b, got.err)
	}
	want, n := copyOutHash(t, holder.PgConn(), query)
	if got.n != n || !bytes.Equal(got.sum, want) {
		t.Fatalf("COPY through the client: %d bytes sha256 %x; straight from PostgreSQL: %d bytes %x", got.n, got.sum, n, want)
	}
	if !rc.running() {
		t.Fatalf("the client exited:\n%s", rc.log.String())
	}
	t.Logf("streams per instance: %v; COPY %d bytes intact", streamsPer(world, []string{a, b, c}), got.n)
	if slices.Contains([]int64{world.SSM.TargetStreams(b), world.SSM.TargetStreams(c)}, 0) {
		t.Error("an instance carried no stream")
	}
}

// copyWaiting reports whether a COPY waits for an advisory lock.
func copyWaiting(t *testing.T, world *sandbox.World) bool {
	conn := worldSuperuser(t, world)
	defer conn.Close(context.Background())
	var n int
	err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory' AND query LIKE 'COPY%'").Scan(&n)
	return err == nil && n > 0
}
