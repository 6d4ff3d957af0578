package kube

import (
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// rewatchBackoff bounds how often a failed or ended pod watch is opened
// again.
const rewatchBackoff = 5 * time.Second

// watchPods watches the server's pods and asks the pool to list them
// again on every change (a pod added, marked for deletion, not ready,
// deleted), so that a rollout is followed within the pool's backoff rather
// than at the next ResolveInterval. It ends with the tunnel. Without RBAC
// "watch" on pods it says so once and leaves the interval to do the work.
func (t *Tunnel) watchPods(refresh func()) {
	for {
		err := t.watchOnce(refresh)
		if apierrors.IsForbidden(err) {
			t.base.log.Info("cannot watch the server's pods (grant RBAC verb watch on pods): new and terminating pods are noticed when the pods are listed again",
				"namespace", t.base.namespace, "every", t.base.cfg.ResolveInterval)
			return
		}
		if err != nil && t.life.Err() == nil {
			t.base.log.Debug("kube pod watch ended", "err", err)
		}
		timer := time.NewTimer(rewatchBackoff)
		select {
		case <-t.life.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// watchOnce runs one watch until it ends.
func (t *Tunnel) watchOnce(refresh func()) error {
	selector, _, err := t.base.selector(t.life)
	if err != nil {
		return err
	}
	w, err := t.base.core.Pods(t.base.namespace).Watch(t.life, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			return apierrors.FromObject(ev.Object)
		}
		refresh()
	}
	return errors.New("the API server ended the watch")
}
