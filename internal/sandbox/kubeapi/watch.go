package kubeapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

const (
	watchAdded    = watch.Added
	watchModified = watch.Modified
	watchDeleted  = watch.Deleted
	// watchBuffer is how many events a watcher may lag behind; a slower
	// one has its watch closed, as the API server does, and re-watches.
	watchBuffer = 64
)

// podEvent is one change to a pod, as a watch reports it.
type podEvent struct {
	typ watch.EventType
	pod pod
}

// notifyLocked bumps the resourceVersion and sends the change to every
// watcher. Called with mu held.
func (s *Server) notifyLocked(typ watch.EventType, p *pod) {
	s.version++
	p.version = s.version
	for ch := range s.watchers {
		select {
		case ch <- podEvent{typ: typ, pod: *p}:
		default: // too slow: end its watch
			delete(s.watchers, ch)
			close(ch)
		}
	}
}

// watchPods serves GET .../pods?watch=true: a chunked stream of JSON
// WatchEvents. Like the API server for a watch without a resourceVersion,
// it starts with a synthetic ADDED event for every matching pod, then sends
// each change; the watch ends when the client goes, the server closes, or
// the client falls behind.
func (s *Server) watchPods(w http.ResponseWriter, r *http.Request, sel labels.Selector) {
	if !s.allowed(w, "watch", "pods", "", r.PathValue("ns"), "") {
		return
	}
	match := r.PathValue("ns") == s.cfg.Namespace && sel.Matches(labels.Set(s.cfg.Labels))
	ch := make(chan podEvent, watchBuffer)
	s.mu.Lock()
	var initial []podEvent
	if match {
		for _, p := range s.pods {
			initial = append(initial, podEvent{typ: watchAdded, pod: *p})
		}
	}
	s.watchers[ch] = struct{}{}
	s.mu.Unlock()
	defer s.unwatch(ch)

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flush := http.NewResponseController(w).Flush
	flush()
	enc := json.NewEncoder(w)
	send := func(ev podEvent) bool {
		obj, err := json.Marshal(s.podObject(ev.pod))
		if err != nil {
			return false
		}
		err = enc.Encode(&metav1.WatchEvent{Type: string(ev.typ), Object: runtime.RawExtension{Raw: obj}})
		return err == nil && flush() == nil
	}
	for _, ev := range initial {
		if !send(ev) {
			return
		}
	}
	for {
		select {
		case ev, ok := <-ch:
			if !ok || (match && !send(ev)) {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
	}
}

func (s *Server) unwatch(ch chan podEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.watchers[ch]; ok {
		delete(s.watchers, ch)
		close(ch)
	}
}

// resourceVersion formats a version for object and list metadata.
func resourceVersion(v int) string { return strconv.Itoa(v) }
