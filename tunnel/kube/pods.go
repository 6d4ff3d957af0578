package kube

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rdsproxy/rdsproxy/tunnel"
)

// maxPodsInError caps the pod list quoted in a "no ready pod" error.
const maxPodsInError = 5

// resolvePod finds the pod to forward to, as kubectl does for deploy/NAME:
// the Deployment's selector (or Config.Selector), the matching pods, the
// best ready one.
func (t *podTunnel) resolvePod(ctx context.Context) (string, error) {
	if t.pin != "" {
		return t.pin, t.pinnedUsable(ctx)
	}
	pods, err := t.servingPods(ctx)
	if err != nil {
		return "", err
	}
	return pods[0], nil
}

// servingPods lists the Deployment's (or selector's) pods that can take a
// port-forward, best first (kubectl's order, see pickPod), or fails with
// ErrNoReadyPod and what the pods are doing instead.
func (t *podTunnel) servingPods(ctx context.Context) ([]string, error) {
	selector, what, err := t.selector(ctx)
	if err != nil {
		return nil, err
	}
	list, err := t.core.Pods(t.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, t.explain(err, access{verb: "list", resource: "pods"})
	}
	pods := make([]*corev1.Pod, 0, len(list.Items))
	for i := range list.Items {
		pods = append(pods, &list.Items[i])
	}
	var names []string
	for _, p := range rankPods(pods) {
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		return nil, t.noReadyPod(what, selector, describePods(pods))
	}
	return names, nil
}

// pinnedUsable checks that the pinned pod still serves: a pod deleted or
// terminating never will again (tunnel.ErrReplicaGone); one that is only
// not ready may be listed again later.
func (t *podTunnel) pinnedUsable(ctx context.Context) error {
	p, err := t.core.Pods(t.namespace).Get(ctx, t.pin, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return &kubeError{kind: tunnel.ErrReplicaGone, msg: fmt.Sprintf("kube: pod %s is gone", t.pin)}
	case err != nil:
		return t.explain(err, access{verb: "get", resource: "pods", name: t.pin})
	case p.DeletionTimestamp != nil:
		return &kubeError{kind: tunnel.ErrReplicaGone, msg: fmt.Sprintf("kube: pod %s is terminating", t.pin)}
	case !serving(p):
		return &kubeError{kind: ErrNoReadyPod, msg: fmt.Sprintf("kube: pod %s is not ready", t.pin)}
	}
	return nil
}

// selector is the label selector of the server's pods (Config.Selector, or
// the Deployment's) and what it stands for, for messages.
func (t *podTunnel) selector(ctx context.Context) (selector, what string, err error) {
	if t.cfg.Deployment == "" {
		return t.cfg.Selector, "selector " + t.cfg.Selector, nil
	}
	selector, err = t.deploymentSelector(ctx)
	return selector, "deployment " + t.cfg.Deployment, err
}

func (t *podTunnel) deploymentSelector(ctx context.Context) (string, error) {
	d, err := t.apps.Deployments(t.namespace).Get(ctx, t.cfg.Deployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("kube: deployment %s not found in namespace %s", t.cfg.Deployment, t.namespace)
	}
	if err != nil {
		return "", t.explain(err, access{verb: "get", resource: "deployments", name: t.cfg.Deployment})
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return "", fmt.Errorf("kube: deployment %s has an invalid selector: %w", d.Name, err)
	}
	if sel.Empty() {
		return "", fmt.Errorf("kube: deployment %s has an empty selector", d.Name)
	}
	return sel.String(), nil
}

// podUsable re-checks a pod the tunnel is connected to after one of its
// streams reported an error: still there, running, ready, not terminating.
func (t *podTunnel) podUsable(ctx context.Context, name string) (bool, error) {
	p, err := t.core.Pods(t.namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, t.explain(err, access{verb: "get", resource: "pods", name: name})
	}
	return serving(p), nil
}

// serving reports whether a pod can take a port-forward: running, Ready
// condition true, not being deleted.
func serving(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && ready(p)
}

// pickPod returns the best serving pod or nil. The order is kubectl's
// (podutils.ActivePods, best first): scheduled before unscheduled, ready
// for longer (more available) before recently ready, fewer container
// restarts, then older before newer; the name breaks ties so the choice is
// stable.
func pickPod(pods []*corev1.Pod) *corev1.Pod {
	if cands := rankPods(pods); len(cands) > 0 {
		return cands[0]
	}
	return nil
}

// rankPods returns the serving pods, best first (see pickPod).
func rankPods(pods []*corev1.Pod) []*corev1.Pod {
	var cands []*corev1.Pod
	for _, p := range pods {
		if serving(p) {
			cands = append(cands, p)
		}
	}
	slices.SortStableFunc(cands, comparePods)
	return cands
}

// comparePods orders serving pods best first (negative: a before b).
func comparePods(a, b *corev1.Pod) int {
	if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
		return boolFirst(a.Spec.NodeName != "")
	}
	ra, rb := readySince(a), readySince(b)
	if !ra.Equal(rb) {
		return timeFirst(ra, rb)
	}
	if ca, cb := restarts(a), restarts(b); ca != cb {
		return ca - cb
	}
	ta, tb := a.CreationTimestamp.Time, b.CreationTimestamp.Time
	if !ta.Equal(tb) {
		return timeFirst(ta, tb)
	}
	if a.Name < b.Name {
		return -1
	}
	if a.Name > b.Name {
		return 1
	}
	return 0
}

// boolFirst orders the "true" side first.
func boolFirst(aTrue bool) int {
	if aTrue {
		return -1
	}
	return 1
}

// timeFirst orders the earlier time first; a zero time counts as latest.
func timeFirst(a, b time.Time) int {
	switch {
	case a.IsZero():
		return 1
	case b.IsZero():
		return -1
	case a.Before(b):
		return -1
	default:
		return 1
	}
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readySince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

func restarts(p *corev1.Pod) int {
	n := 0
	for _, c := range p.Status.ContainerStatuses {
		n = max(n, int(c.RestartCount))
	}
	return n
}

// describePods summarises why pods did not qualify, for the error text.
func describePods(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		if len(out) == maxPodsInError {
			out = append(out, fmt.Sprintf("and %d more", len(pods)-maxPodsInError))
			break
		}
		state := string(p.Status.Phase)
		switch {
		case p.DeletionTimestamp != nil:
			state = "terminating"
		case p.Status.Phase == corev1.PodRunning && !ready(p):
			state = "Running, not ready"
		case state == "":
			state = "no status"
		}
		out = append(out, fmt.Sprintf("%s (%s)", p.Name, state))
	}
	return out
}
