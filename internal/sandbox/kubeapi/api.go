package kubeapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/version"
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", s.getVersion)
	mux.HandleFunc("GET /api", s.getAPIVersions)
	mux.HandleFunc("GET /apis", s.getAPIGroups)
	mux.HandleFunc("GET /api/v1", s.getCoreResources)
	mux.HandleFunc("GET /apis/apps/v1", s.getAppsResources)
	mux.HandleFunc("GET /apis/apps/v1/namespaces/{ns}/deployments/{name}", s.getDeployment)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods", s.listPods)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}", s.getPod)
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/pods/{name}/portforward", s.portForwardWebsocket)
	mux.HandleFunc("POST /api/v1/namespaces/{ns}/pods/{name}/portforward", s.portForwardSPDY)
	return s.authenticate(mux)
}

// authenticate answers 401 with a Status unless the bearer token matches.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Debug("kubeapi request", "method", r.Method, "path", r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer "+s.cfg.Token {
			writeStatus(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "Unauthorized", nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// allowed answers 403 with a Kubernetes-style message if verb on resource
// is forbidden.
func (s *Server) allowed(w http.ResponseWriter, verb, resource, group, ns, name string) bool {
	s.mu.Lock()
	denied := s.forbidden[verb+" "+resource]
	s.mu.Unlock()
	if !denied {
		return true
	}
	kind, _, _ := strings.Cut(resource, "/")
	subject := kind
	if name != "" {
		subject = fmt.Sprintf("%s %q", kind, name)
	}
	msg := fmt.Sprintf("%s is forbidden: User %q cannot %s resource %q in API group %q in the namespace %q",
		subject, s.user, verb, resource, group, ns)
	writeStatus(w, http.StatusForbidden, metav1.StatusReasonForbidden, msg,
		&metav1.StatusDetails{Name: name, Group: group, Kind: kind})
	return false
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !s.allowed(w, "get", "deployments", "apps", ns, name) {
		return
	}
	if ns != s.cfg.Namespace || name != s.cfg.Deployment {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("deployments.apps %q not found", name),
			&metav1.StatusDetails{Name: name, Group: "apps", Kind: "deployments"})
		return
	}
	replicas := int32(len(s.Pods()))
	writeJSON(w, &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: s.cfg.Labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: s.cfg.Labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: s.cfg.Labels}},
		},
	})
}

// listPods serves LIST, or WATCH with ?watch=true (RBAC verb "watch").
func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	watching := r.URL.Query().Get("watch") == "true" || r.URL.Query().Get("watch") == "1"
	if !watching && !s.allowed(w, "list", "pods", "", ns, "") {
		return
	}
	sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeStatus(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, err.Error(), nil)
		return
	}
	if watching {
		s.watchPods(w, r, sel)
		return
	}
	s.mu.Lock()
	rv := resourceVersion(s.version)
	s.mu.Unlock()
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: rv}}
	if ns == s.cfg.Namespace && sel.Matches(labels.Set(s.cfg.Labels)) {
		for _, p := range s.podSnapshot() {
			list.Items = append(list.Items, *s.podObject(p))
		}
	}
	writeJSON(w, list)
}

func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !s.allowed(w, "get", "pods", "", ns, name) {
		return
	}
	p, ok := s.findPod(name)
	if !ok || ns != s.cfg.Namespace {
		writeStatus(w, http.StatusNotFound, metav1.StatusReasonNotFound,
			fmt.Sprintf("pods %q not found", name), &metav1.StatusDetails{Name: name, Kind: "pods"})
		return
	}
	writeJSON(w, s.podObject(p))
}

func (s *Server) podSnapshot() []pod {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]pod, 0, len(s.pods))
	for _, p := range s.pods {
		out = append(out, *p)
	}
	return out
}

func (s *Server) podObject(p pod) *corev1.Pod {
	readyStatus := corev1.ConditionFalse
	if p.ready {
		readyStatus = corev1.ConditionTrue
	}
	created, readyAt := metav1.NewTime(p.created), metav1.NewTime(p.readyAt)
	meta := metav1.ObjectMeta{
		Name: p.name, Namespace: s.cfg.Namespace, Labels: s.cfg.Labels,
		CreationTimestamp: created, UID: types.UID("uid-" + p.name),
		ResourceVersion: resourceVersion(p.version),
	}
	if !p.deleted.IsZero() {
		deleted, grace := metav1.NewTime(p.deleted), int64(terminationGrace)
		meta.DeletionTimestamp, meta.DeletionGracePeriodSeconds = &deleted, &grace
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: meta,
		Spec: corev1.PodSpec{
			NodeName: "fake-node",
			Containers: []corev1.Container{{Name: "server", Image: "rdsproxy",
				Ports: []corev1.ContainerPort{{Name: "postgres", ContainerPort: int32(s.cfg.Port), Protocol: corev1.ProtocolTCP}}}},
		},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			StartTime:  &created,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: readyAt}},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "server", Ready: p.ready, Image: "rdsproxy",
			}},
		},
	}
}

// Discovery, enough for kubectl to map "deploy" to apps/v1 deployments.

func (s *Server) getVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, &version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.0-kubeapi-fake", Platform: "linux/amd64"})
}

func (s *Server) getAPIVersions(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, &metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
			{ClientCIDR: "0.0.0.0/0", ServerAddress: strings.TrimPrefix(s.srv.URL, "https://")},
		},
	})
}

func (s *Server) getAPIGroups(w http.ResponseWriter, _ *http.Request) {
	apps := metav1.GroupVersionForDiscovery{GroupVersion: "apps/v1", Version: "v1"}
	writeJSON(w, &metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   []metav1.APIGroup{{Name: "apps", Versions: []metav1.GroupVersionForDiscovery{apps}, PreferredVersion: apps}},
	})
}

func (s *Server) getCoreResources(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "pods", SingularName: "pod", Namespaced: true, Kind: "Pod", ShortNames: []string{"po"},
				Verbs: metav1.Verbs{"get", "list", "watch"}},
			{Name: "pods/portforward", Namespaced: true, Kind: "PodPortForwardOptions", Verbs: metav1.Verbs{"get", "create"}},
		},
	})
}

func (s *Server) getAppsResources(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "apps/v1",
		APIResources: []metav1.APIResource{
			{Name: "deployments", SingularName: "deployment", Namespaced: true, Kind: "Deployment",
				ShortNames: []string{"deploy"}, Verbs: metav1.Verbs{"get", "list"}},
		},
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// writeStatus answers with a Kubernetes Status object, as the API server
// does for every failure.
func writeStatus(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string, details *metav1.StatusDetails) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Message:  msg,
		Reason:   reason,
		Details:  details,
		Code:     int32(code),
	})
}
