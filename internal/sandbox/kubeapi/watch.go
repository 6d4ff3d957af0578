package kubeapi

import (
	"encoding/json"
	"fmt"
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
	// historySize is how many past changes a watch from a resourceVersion
	// can start after; an older version is answered 410 Gone.
	historySize = 256
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
	ev := podEvent{typ: typ, pod: *p}
	if s.history = append(s.history, ev); len(s.history) > historySize {
		s.history = s.history[1:]
	}
	for ch := range s.watchers {
		select {
		case ch <- ev:
		default: // too slow: end its watch
			delete(s.watchers, ch)
			close(ch)
		}
	}
}

// watchPods serves GET .../pods?watch=true: a chunked stream of JSON
// WatchEvents. As the API server does, a watch without a resourceVersion
// (or "0") starts with a synthetic ADDED event for every matching pod, one
// from a version (kubectl get -w, after its list) with the changes since
// then (410 Gone if they are no longer kept); then each change. The watch
// ends when the client goes, the server closes, or the client falls behind.
func (s *Server) watchPods(w http.ResponseWriter, r *http.Request, sel labels.Selector) {
	if !s.allowed(w, "watch", "pods", "", r.PathValue("ns"), "") {
		return
	}
	match := r.PathValue("ns") == s.cfg.Namespace && sel.Matches(labels.Set(s.cfg.Labels))
	ch := make(chan podEvent, watchBuffer)
	from := r.URL.Query().Get("resourceVersion")
	s.mu.Lock()
	initial, ok := s.startLocked(from)
	if ok {
		s.watchers[ch] = struct{}{}
	}
	s.mu.Unlock()
	if !ok {
		writeStatus(w, http.StatusGone, metav1.StatusReasonExpired,
			fmt.Sprintf("too old resource version: %s (%d)", from, s.oldest()), nil)
		return
	}
	if !match {
		initial = nil
	}
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

// startLocked returns the events a watch from resourceVersion from begins
// with, or false when that version is older than the kept history.
func (s *Server) startLocked(from string) ([]podEvent, bool) {
	if from == "" || from == "0" {
		var out []podEvent
		for _, p := range s.pods {
			out = append(out, podEvent{typ: watchAdded, pod: *p})
		}
		return out, true
	}
	v, err := strconv.Atoi(from)
	if err != nil || v > s.version {
		return nil, false
	}
	if len(s.history) > 0 && v < s.history[0].pod.version-1 {
		return nil, false
	}
	var out []podEvent
	for _, ev := range s.history {
		if ev.pod.version > v {
			out = append(out, ev)
		}
	}
	return out, true
}

// oldest is the oldest version a watch can start from.
func (s *Server) oldest() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.history) == 0 {
		return s.version
	}
	return s.history[0].pod.version - 1
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
