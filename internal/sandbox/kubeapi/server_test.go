package kubeapi_test

import (
	"encoding/json"
	"io"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/rdsproxy/rdsproxy/internal/sandbox/kubeapi"
)

// The REST endpoints answer like an API server: Status bodies for 401,
// 403 and 404, label-selected pod lists, readiness and rollouts.
func TestAPI(t *testing.T) {
	s, err := kubeapi.Start(kubeapi.Config{Target: "127.0.0.1:1", Namespace: "db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	first := s.Pods()[0]
	tests := []struct {
		name     string
		token    string
		setup    func()
		path     string
		code     int
		reason   metav1.StatusReason
		wantPods []string // for pod lists
	}{
		{name: "wrong token", token: "nope", path: "/api/v1/namespaces/db/pods", code: 401, reason: metav1.StatusReasonUnauthorized},
		{name: "deployment", path: "/apis/apps/v1/namespaces/db/deployments/rdsproxy", code: 200},
		{name: "unknown deployment", path: "/apis/apps/v1/namespaces/db/deployments/other", code: 404, reason: metav1.StatusReasonNotFound},
		{name: "pods by selector", path: "/api/v1/namespaces/db/pods?labelSelector=app%3Drdsproxy", code: 200, wantPods: []string{first}},
		{name: "other selector", path: "/api/v1/namespaces/db/pods?labelSelector=app%3Dother", code: 200, wantPods: []string{}},
		{name: "other namespace", path: "/api/v1/namespaces/default/pods", code: 200, wantPods: []string{}},
		{name: "pod", path: "/api/v1/namespaces/db/pods/" + first, code: 200},
		{name: "forbidden list", setup: func() { s.Forbid("list", "pods") }, path: "/api/v1/namespaces/db/pods", code: 403, reason: metav1.StatusReasonForbidden},
		{name: "allowed again", setup: func() { s.Allow("list", "pods") }, path: "/api/v1/namespaces/db/pods", code: 200, wantPods: []string{first}},
		{name: "rollout replaces the pod", setup: func() { s.Rollout("127.0.0.1:2", true) }, path: "/api/v1/namespaces/db/pods/" + first, code: 404, reason: metav1.StatusReasonNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != nil {
				tt.setup()
			}
			token := tt.token
			if token == "" {
				token = s.Token()
			}
			code, body := get(t, s.RESTConfig(token), tt.path)
			if code != tt.code {
				t.Fatalf("GET %s = %d, want %d: %s", tt.path, code, tt.code, body)
			}
			if tt.reason != "" {
				var st metav1.Status
				if err := json.Unmarshal(body, &st); err != nil || st.Kind != "Status" || st.Reason != tt.reason || st.Code != int32(tt.code) {
					t.Fatalf("body %s is not a %s Status (%v)", body, tt.reason, err)
				}
			}
			if tt.wantPods != nil {
				var list corev1.PodList
				if err := json.Unmarshal(body, &list); err != nil {
					t.Fatal(err)
				}
				got := []string{}
				for _, p := range list.Items {
					got = append(got, p.Name)
				}
				if len(got) != len(tt.wantPods) || (len(got) > 0 && got[0] != tt.wantPods[0]) {
					t.Fatalf("pods = %v, want %v", got, tt.wantPods)
				}
			}
		})
	}
}

func get(t *testing.T, cfg *rest.Config, path string) (int, []byte) {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer utilnet.CloseIdleConnectionsFor(hc.Transport)
	resp, err := hc.Get(cfg.Host + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, buf
}

// A rollout one pod at a time, as the Deployment controller and the kubelet
// do it: a surge pod appears ready, the old pod is marked for deletion
// (deletionTimestamp, grace period, not Ready) but stays listed and
// gettable, then it is gone (404, no longer listed).
func TestReplicaLifecycle(t *testing.T) {
	s, err := kubeapi.Start(kubeapi.Config{Target: "127.0.0.1:1", Namespace: "db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	first := s.Pods()[0]
	second := s.AddPod("127.0.0.1:2")
	cfg := s.RESTConfig(s.Token())
	list := func() map[string]corev1.Pod {
		t.Helper()
		code, body := get(t, cfg, "/api/v1/namespaces/db/pods?labelSelector=app%3Drdsproxy")
		var l corev1.PodList
		if err := json.Unmarshal(body, &l); code != 200 || err != nil {
			t.Fatalf("list: %d %v %s", code, err, body)
		}
		out := map[string]corev1.Pod{}
		for _, p := range l.Items {
			out[p.Name] = p
		}
		return out
	}
	ready := func(p corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	}
	pods := list()
	if len(pods) != 2 || !ready(pods[first]) || !ready(pods[second]) || pods[first].DeletionTimestamp != nil {
		t.Fatalf("two ready pods expected: %+v", pods)
	}
	surge := s.AddPod("127.0.0.1:3")
	if err := s.Terminate(first); err != nil {
		t.Fatal(err)
	}
	pods = list()
	old := pods[first]
	if len(pods) != 3 || old.DeletionTimestamp == nil || old.DeletionGracePeriodSeconds == nil || ready(old) || !ready(pods[surge]) {
		t.Fatalf("after Terminate the old pod must be listed, terminating and not ready, the surge pod ready: %+v", pods)
	}
	if code, _ := get(t, cfg, "/api/v1/namespaces/db/pods/"+first); code != 200 {
		t.Fatalf("GET of a terminating pod = %d, want 200", code)
	}
	if err := s.Remove(first); err != nil {
		t.Fatal(err)
	}
	if pods = list(); len(pods) != 2 || pods[first].Name != "" {
		t.Fatalf("after Remove: %+v", pods)
	}
	if code, _ := get(t, cfg, "/api/v1/namespaces/db/pods/"+first); code != 404 {
		t.Fatalf("GET of a removed pod = %d, want 404", code)
	}
	if s.Remove(first) == nil || s.Terminate("nope") == nil {
		t.Fatal("Remove/Terminate of an unknown pod succeeded")
	}
}

// A pod watch through client-go: synthetic ADDED events for the pods there
// are, then ADDED, MODIFIED (terminating) and DELETED as a rollout goes;
// without RBAC "watch" it is refused with 403.
func TestWatchPods(t *testing.T) {
	s, err := kubeapi.Start(kubeapi.Config{Target: "127.0.0.1:1", Namespace: "db"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	first := s.Pods()[0]
	pods, err := corev1client.NewForConfig(s.RESTConfig(s.Token()))
	if err != nil {
		t.Fatal(err)
	}
	w, err := pods.Pods("db").Watch(t.Context(), metav1.ListOptions{LabelSelector: "app=rdsproxy"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func(want watch.EventType, name string) *corev1.Pod {
		t.Helper()
		select {
		case ev, ok := <-w.ResultChan():
			p, isPod := ev.Object.(*corev1.Pod)
			if !ok || !isPod || ev.Type != want || p.Name != name {
				t.Fatalf("watch event %v %T (open %v), want %s %s", ev.Type, ev.Object, ok, want, name)
			}
			return p
		case <-time.After(30 * time.Second): // hang guard
			t.Fatalf("no %s event for %s", want, name)
			return nil
		}
	}
	next(watch.Added, first)
	second := s.AddPod("127.0.0.1:2")
	next(watch.Added, second)
	s.Terminate(first)
	if p := next(watch.Modified, first); p.DeletionTimestamp == nil {
		t.Fatal("the MODIFIED event of a terminating pod has no deletionTimestamp")
	}
	s.Remove(first)
	next(watch.Deleted, first)

	s.Forbid("watch", "pods")
	if _, err := pods.Pods("db").Watch(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("watch without RBAC: %v, want 403", err)
	}
}
