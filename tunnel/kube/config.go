package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultDialTimeout bounds one Dial: pod lookup, the port-forward upgrade
// and the creation of the stream pair.
const DefaultDialTimeout = 10 * time.Second

// Config says which Kubernetes Deployment (or label selector) runs the
// rdsproxy server and which container port it listens on.
type Config struct {
	// Kubeconfig is an explicit kubeconfig path. Empty: KUBECONFIG, then
	// ~/.kube/config (client-go's standard loading rules).
	Kubeconfig string
	// Context overrides the kubeconfig's current context.
	Context string
	// Namespace overrides the context's namespace; the fallback is "default".
	Namespace string
	// Deployment names the server Deployment; its selector picks the pods.
	Deployment string
	// Selector is a label selector used instead of Deployment.
	Selector string
	// Port is the server's container port inside the pod.
	Port int
	// DialTimeout bounds each Dial (DefaultDialTimeout if zero).
	DialTimeout time.Duration
	// ResolveInterval is how often the ready pods are listed when nothing
	// fails (DefaultResolveInterval if zero).
	ResolveInterval time.Duration
	// Logger receives lifecycle (Info) and per-stream (Debug) records.
	Logger *slog.Logger
	// RESTConfig, when set, is used instead of loading a kubeconfig (tests,
	// in-cluster callers). Namespace then defaults to "default".
	RESTConfig *rest.Config
}

// Validate checks the fields that have no default.
func (c Config) Validate() error {
	switch {
	case c.Deployment == "" && c.Selector == "":
		return errors.New("kube: a deployment name or a label selector is required")
	case c.Deployment != "" && c.Selector != "":
		return errors.New("kube: give a deployment name or a label selector, not both")
	case c.Port <= 0 || c.Port > 65535:
		return fmt.Errorf("kube: port %d is out of range 1-65535", c.Port)
	case c.DialTimeout < 0:
		return fmt.Errorf("kube: dial timeout %s is negative", c.DialTimeout)
	case c.ResolveInterval < 0:
		return fmt.Errorf("kube: resolve interval %s is negative", c.ResolveInterval)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ResolveInterval == 0 {
		c.ResolveInterval = DefaultResolveInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// restConfig returns the API server connection settings and the namespace,
// following kubectl: flag, then the kubeconfig context, then "default".
func (c Config) restConfig() (*rest.Config, string, error) {
	if c.RESTConfig != nil {
		ns := c.Namespace
		if ns == "" {
			ns = "default"
		}
		return rest.CopyConfig(c.RESTConfig), ns, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
	overrides.Context.Namespace = c.Namespace
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	rc, err := loader.ClientConfig()
	if clientcmd.IsEmptyConfig(err) { // client-go's text suggests KUBERNETES_MASTER, which kubectl users never set
		return nil, "", errors.New("kube: no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config): " +
			"point --kubeconfig at the cluster's; for EKS, `aws eks update-kubeconfig --name CLUSTER` writes one")
	}
	if err != nil {
		return nil, "", fmt.Errorf("kube: load kubeconfig: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kube: namespace from kubeconfig: %w", err)
	}
	return rc, ns, nil
}
