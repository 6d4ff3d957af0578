package kube_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rdsproxy/rdsproxy/internal/syncbuf"
	"github.com/rdsproxy/rdsproxy/tunnel"
)

// Two ready pods: new streams are spread over both, DialEach opens one on
// each (for cancels), and a rollout one pod at a time (a surge pod appears,
// the old pod terminates, its server stops, the pod is removed) moves new
// streams to the remaining and new pods without a failed Dial; a stream on
// the removed pod ends, the others are untouched.
func TestReplicasSpreadAndRollout(t *testing.T) {
	echoA, echoB, echoC := startEcho(t), startEcho(t), startEcho(t)
	cluster := startCluster(t, echoA.Addr())
	podA := cluster.Pods()[0]
	podB := cluster.AddPod(echoB.Addr())
	cfg := baseConfig(t, cluster)
	cfg.ResolveInterval = 100 * time.Millisecond
	tun := newTunnel(t, cfg)
	var _ tunnel.Fanout = tun

	var onA []net.Conn
	for i := range 4 {
		c := dial(t, tun)
		if err := ping(c, "spread"); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		onA = append(onA, c)
	}
	if got := cluster.Streams(); got[podA] != 2 || got[podB] != 2 {
		t.Fatalf("4 open streams landed %v, want 2 on each pod", got)
	}
	each, err := tun.DialEach(t.Context())
	if err != nil || len(each) != 2 {
		t.Fatalf("DialEach = %d streams, %v; want one per pod", len(each), err)
	}
	for _, c := range each {
		if err := ping(c, "cancel"); err != nil {
			t.Fatalf("DialEach stream: %v", err)
		}
		c.Close()
	}
	if got := cluster.Streams(); got[podA] != 3 || got[podB] != 3 {
		t.Fatalf("after DialEach streams are %v, want 3 on each pod", got)
	}

	// The rollout replaces pod A.
	podC := cluster.AddPod(echoC.Addr())
	if err := cluster.Terminate(podA); err != nil {
		t.Fatal(err)
	}
	echoA.ln.Close() // the server's drain: no new connections
	before := cluster.Streams()[podA]
	if err := cluster.Remove(podA); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute) // hang guard
	for cluster.Streams()[podC] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no stream reached the new pod %s: %v", podC, cluster.Streams())
		}
		c := dial(t, tun)
		if err := ping(c, "after rollout"); err != nil {
			t.Fatalf("a new stream after the rollout failed: %v (streams %v)", err, cluster.Streams())
		}
		c.Close()
	}
	if got := cluster.Streams()[podA]; got != before {
		t.Errorf("%d new streams went to the removed pod %s", got-before, podA)
	}
	alive := 0
	for _, c := range onA {
		if ping(c, "still there?") == nil {
			alive++
		}
	}
	if alive != 2 {
		t.Errorf("%d of the 4 first streams still work, want the 2 on pod %s", alive, podB)
	}
	each, err = tun.DialEach(t.Context())
	if err != nil || len(each) != 2 {
		t.Fatalf("DialEach after the rollout = %d streams, %v; want one on %s and %s", len(each), err, podB, podC)
	}
	for _, c := range each {
		c.Close()
	}
}

// A pod marked for deletion whose server already stopped listening (the
// kubelet sends SIGTERM at once; the client lists pods only every
// ResolveInterval) is still picked for new streams: the kubelet refuses
// them, nothing reached a server, so each moves to the other pod and
// replays what it wrote. No new stream fails.
func TestReplicasDrainingPodRefuses(t *testing.T) {
	echoA, echoB := startEcho(t), startEcho(t)
	cluster := startCluster(t, echoA.Addr())
	podA := cluster.Pods()[0]
	cluster.AddPod(echoB.Addr())
	cfg := baseConfig(t, cluster)
	cfg.ResolveInterval = time.Hour // only failures make it list again
	tun := newTunnel(t, cfg)
	// Both pods' port-forward connections are up (two streams held open
	// land on both), so the draining pod is not re-checked before use.
	warm := []net.Conn{dial(t, tun), dial(t, tun)}
	for _, c := range warm {
		if err := ping(c, "warm"); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	if err := cluster.Terminate(podA); err != nil {
		t.Fatal(err)
	}
	echoA.ln.Close() // draining: the port refuses
	before := cluster.Streams()[podA]
	for i := range 8 {
		c := dial(t, tun)
		// A transfer with a half-close, written while the stream may be
		// moving (one of the first two lands on the draining pod), or a
		// short exchange.
		var err error
		if i < 2 || i%2 == 1 {
			err = transfer(c, 4096, uint64(i))
		} else {
			err = ping(c, "hello, replica")
		}
		if err != nil {
			t.Fatalf("stream %d after the pod began draining: %v (streams %v)", i, err, cluster.Streams())
		}
		c.Close()
	}
	if cluster.Streams()[podA] == before {
		t.Fatalf("no stream was sent to the draining pod %s, so nothing was moved: %v", podA, cluster.Streams())
	}
}

// The pod watch makes the pool list the pods again when they change: with
// no periodic list (ResolveInterval of an hour) and no failure, a pod added
// by a scale-up or rollout still receives new streams.
func TestReplicasWatchFindsNewPod(t *testing.T) {
	echoA, echoB := startEcho(t), startEcho(t)
	cluster := startCluster(t, echoA.Addr())
	cfg := baseConfig(t, cluster)
	cfg.ResolveInterval = time.Hour
	tun := newTunnel(t, cfg)
	if err := ping(dial(t, tun), "first"); err != nil {
		t.Fatal(err)
	}
	podB := cluster.AddPod(echoB.Addr())
	deadline := time.Now().Add(time.Minute) // hang guard
	for cluster.Streams()[podB] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the new pod %s got no stream: %v", podB, cluster.Streams())
		}
		c := dial(t, tun)
		if err := ping(c, "next"); err != nil {
			t.Fatal(err)
		}
		c.Close()
		time.Sleep(20 * time.Millisecond) // poll, as waitFor does
	}
}

// Without RBAC "watch" on pods the tunnel says once what to grant and goes
// on with the periodic listing; streams are unaffected.
func TestReplicasWithoutWatch(t *testing.T) {
	echo := startEcho(t)
	cluster := startCluster(t, echo.Addr())
	cluster.Forbid("watch", "pods")
	var logs syncbuf.Buffer
	cfg := baseConfig(t, cluster)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	tun := newTunnel(t, cfg)
	if err := ping(dial(t, tun), "no watch"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute) // hang guard
	for !strings.Contains(logs.String(), "grant RBAC verb watch on pods") {
		if time.Now().After(deadline) {
			t.Fatalf("no word about the missing watch permission:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond) // poll, as waitFor does
	}
	if err := ping(dial(t, tun), "still fine"); err != nil {
		t.Fatal(err)
	}
}
