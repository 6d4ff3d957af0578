package kube

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	//lint:ignore SA1019 client-go's SPDY and websocket dialers still return this package's UpgradeFailureError
	apihttpstream "k8s.io/apimachinery/pkg/util/httpstream"
	streamhttp "k8s.io/streaming/pkg/httpstream"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type podSpec struct {
	name        string
	phase       corev1.PodPhase
	ready       bool
	readyAt     time.Time
	node        string
	restarts    int32
	created     time.Time
	terminating bool
}

func (p podSpec) pod() *corev1.Pod {
	status := corev1.ConditionFalse
	if p.ready {
		status = corev1.ConditionTrue
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, CreationTimestamp: metav1.NewTime(p.created)},
		Spec:       corev1.PodSpec{NodeName: p.node},
		Status: corev1.PodStatus{
			Phase:             p.phase,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.NewTime(p.readyAt)}},
			ContainerStatuses: []corev1.ContainerStatus{{RestartCount: p.restarts}},
		},
	}
	if p.terminating {
		now := metav1.NewTime(t0)
		pod.DeletionTimestamp = &now
	}
	return pod
}

func TestPickPod(t *testing.T) {
	ok := func(name string) podSpec {
		return podSpec{name: name, phase: corev1.PodRunning, ready: true, node: "n", readyAt: t0, created: t0}
	}
	with := func(p podSpec, f func(*podSpec)) podSpec { f(&p); return p }
	tests := []struct {
		name string
		pods []podSpec
		want string // "" = none
	}{
		{"none", nil, ""},
		{"pending only", []podSpec{with(ok("a"), func(p *podSpec) { p.phase = corev1.PodPending; p.ready = false })}, ""},
		{"running not ready", []podSpec{with(ok("a"), func(p *podSpec) { p.ready = false })}, ""},
		{"terminating ready pod is skipped", []podSpec{with(ok("old"), func(p *podSpec) { p.terminating = true }), ok("new")}, "new"},
		{"ready beats not ready", []podSpec{with(ok("a"), func(p *podSpec) { p.ready = false }), ok("b")}, "b"},
		{"scheduled beats unscheduled", []podSpec{with(ok("a"), func(p *podSpec) { p.node = "" }), ok("b")}, "b"},
		{"ready longer wins", []podSpec{
			with(ok("recent"), func(p *podSpec) { p.readyAt = t0.Add(time.Hour) }),
			with(ok("long"), func(p *podSpec) { p.readyAt = t0 }),
		}, "long"},
		{"fewer restarts wins", []podSpec{
			with(ok("crashy"), func(p *podSpec) { p.restarts = 3 }),
			ok("steady"),
		}, "steady"},
		{"older wins on a tie", []podSpec{
			with(ok("young"), func(p *podSpec) { p.created = t0.Add(time.Minute) }),
			ok("old"),
		}, "old"},
		{"name breaks a full tie", []podSpec{ok("b"), ok("a")}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pods := make([]*corev1.Pod, 0, len(tt.pods))
			for _, p := range tt.pods {
				pods = append(pods, p.pod())
			}
			got := ""
			if p := pickPod(pods); p != nil {
				got = p.Name
			}
			if got != tt.want {
				t.Fatalf("pickPod = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestShouldFallback(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods/portforward"}, "p", errors.New("no"))
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"streaming module upgrade failure", &streamhttp.UpgradeFailureError{Cause: errors.New("400")}, true},
		{"wrapped streaming upgrade failure", fmt.Errorf("dial: %w", &streamhttp.UpgradeFailureError{Cause: forbidden}), true},
		{"apimachinery upgrade failure", &apihttpstream.UpgradeFailureError{Cause: errors.New("400")}, true},
		{"https proxy unsupported by gorilla", errors.New("proxy: unknown scheme: https"), true},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		{"plain forbidden", forbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shouldFallback(tt.err); got != tt.want {
				t.Fatalf("shouldFallback(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	// apimachinery's helper alone misses the streaming module's type: the
	// reason shouldFallback checks both.
	if apihttpstream.IsUpgradeFailure(&streamhttp.UpgradeFailureError{}) {
		t.Fatal("apimachinery now recognises streaming's UpgradeFailureError; simplify shouldFallback")
	}
}

func TestAPIStatusInsideUpgradeFailure(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "pods/portforward"}, "p", errors.New("no"))
	err := fmt.Errorf("connect: %w", &streamhttp.UpgradeFailureError{Cause: forbidden})
	se, ok := apiStatus(err)
	if !ok || !apierrors.IsForbidden(se) {
		t.Fatalf("apiStatus(%v) = %v, %v; want the forbidden status", err, se, ok)
	}
}

func TestDeadline(t *testing.T) {
	var d deadline
	select {
	case <-d.wait():
		t.Fatal("zero deadline expired")
	default:
	}
	d.set(time.Now().Add(-time.Second))
	<-d.wait() // past: expired at once
	d.set(time.Time{})
	select {
	case <-d.wait():
		t.Fatal("cleared deadline still expired")
	default:
	}
	d.set(time.Now().Add(time.Millisecond))
	<-d.wait() // fires
	d.stop()
}
