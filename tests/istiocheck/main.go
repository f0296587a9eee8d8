// Command istiocheck runs Istio's own multi-cluster secret controller
// (istio.io/istio/pkg/kube/multicluster, built the way istiod's
// pilot/pkg/bootstrap builds it) against one primary cluster, and reports
// what Istio made of the remote secrets it found there.
//
// It is test infrastructure for meshform: the Rust helper in
// tests/support/istio.rs starts it, reads its stdout and stops it by closing
// its stdin. It writes nothing to any cluster.
//
// Every line on stdout is one JSON snapshot of the whole state, printed when
// the state changes:
//
//	{"config_cluster":"a","namespace":"istio-system","synced":true,
//	 "clusters":[{"id":"b","secret":"istio-system/istio-remote-secret-b",
//	   "status":"synced","client_ok":true,"network":"net-b","builds":1}],
//	 "rejected":[{"cluster":"x","error":"kubeconfig is not allowed: exec is not allowed"}]}
//
// "clusters" is Istio's list of remote clusters (the controller's
// ListRemoteClusters, the same data istiod's debug endpoint serves), joined
// with what this program observes through each cluster's Istio-built client.
// Istio's logs go to stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"istio.io/api/label"
	"istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config/mesh/meshwatcher"
	"istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/kclient"
	"istio.io/istio/pkg/kube/krt"
	"istio.io/istio/pkg/kube/multicluster"
	"istio.io/istio/pkg/kube/namespace"
)

// How often the state is re-read, and each remote cluster's client probed.
const (
	pollInterval  = 200 * time.Millisecond
	probeInterval = time.Second
	probeTimeout  = 5 * time.Second
)

type snapshot struct {
	ConfigCluster string `json:"config_cluster"`
	Namespace     string `json:"namespace"`
	// Synced is the controller's own HasSynced: the secrets present at start
	// are processed and every remote cluster has synced or timed out.
	Synced   bool         `json:"synced"`
	Clusters []remoteView `json:"clusters"`
	Rejected []rejection  `json:"rejected"`
}

type remoteView struct {
	ID string `json:"id"`
	// Secret is the namespace/name of the remote secret the cluster came from.
	Secret string `json:"secret"`
	// Status is Istio's sync status: syncing, synced, timeout or closed.
	Status string `json:"status"`
	// ClientOK: a namespace list through the client Istio holds for this
	// cluster succeeded on the latest probe (once a second).
	ClientOK    bool   `json:"client_ok"`
	ClientError string `json:"client_error,omitempty"`
	// Network is the topology.istio.io/network label of the system namespace
	// of this cluster, read the way istiod's kube service registry reads it;
	// null until Istio has started the cluster's components and that
	// namespace is seen, "" when it has no such label.
	Network *string `json:"network"`
	// Builds counts how often Istio built a client for this cluster id (an
	// add, then one per changed kubeconfig, e.g. a rotated token).
	Builds int `json:"builds"`
}

type rejection struct {
	Cluster string `json:"cluster"`
	Error   string `json:"error"`
}

// peer is what this program attaches to every cluster Istio runs, through
// multicluster.BuildMultiClusterComponent: the hook istiod's own per-cluster
// components (the kube service registry among them) use. Istio calls it once
// the cluster's namespace informer has synced.
type peer struct {
	namespaces kclient.Client[*corev1.Namespace]
}

func (p *peer) HasSynced() bool { return p.namespaces.HasSynced() }

func (p *peer) Close() { p.namespaces.ShutdownHandlers() }

// network mirrors pilot/pkg/serviceregistry/kube/controller: the registry
// watches namespaces with an unfiltered kclient and takes the network of the
// cluster from label.TopologyNetwork on the system namespace
// (networkManager.setNetworkFromNamespace).
func (p *peer) network(systemNamespace string) *string {
	ns := p.namespaces.Get(systemNamespace, "")
	if ns == nil {
		return nil
	}
	nw := ns.Labels[label.TopologyNetwork.Name]
	return &nw
}

// probes lists namespaces, once a second, through the client Istio holds for
// each remote cluster (the controller's GetRemoteKubeClient), whether or not
// Istio managed to sync it.
type probes struct {
	mu      sync.Mutex
	results map[cluster.ID]error
}

func (p *probes) run(controller *multicluster.Controller, stop <-chan struct{}) {
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for {
		ids := controller.ListClusters()
		results := make(map[cluster.ID]error, len(ids))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, id := range ids {
			client := controller.GetRemoteKubeClient(id)
			if client == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
				defer cancel()
				_, err := client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{Limit: 1})
				mu.Lock()
				results[id] = err
				mu.Unlock()
			}()
		}
		wg.Wait()
		p.mu.Lock()
		p.results = results
		p.mu.Unlock()
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
	}
}

func (p *probes) state(id cluster.ID) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	err, probed := p.results[id]
	switch {
	case !probed:
		return false, "not probed yet"
	case err != nil:
		return false, err.Error()
	default:
		return true, ""
	}
}

// rejections remembers the latest error Istio's client builder returned for
// each cluster id, until a later kubeconfig for that id is accepted.
type rejections struct {
	mu     sync.Mutex
	errors map[string]string
}

func (r *rejections) record(id cluster.ID, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.errors, string(id))
	} else {
		r.errors[string(id)] = err.Error()
	}
}

func (r *rejections) list() []rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []rejection{}
	for id, e := range r.errors {
		out = append(out, rejection{Cluster: id, Error: e})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the primary (the config cluster)")
	kubeContext := flag.String("context", "", "context in the kubeconfig")
	clusterID := flag.String("cluster-id", "", "the primary's own cluster id (istiod's CLUSTER_ID)")
	systemNamespace := flag.String("namespace", "istio-system", "the mesh namespace (istiod's POD_NAMESPACE)")
	flag.Parse()
	if *kubeconfig == "" || *clusterID == "" {
		fmt.Fprintln(os.Stderr, "usage: istiocheck -kubeconfig PATH [-context NAME] -cluster-id ID [-namespace NS]")
		os.Exit(2)
	}
	if err := run(*kubeconfig, *kubeContext, cluster.ID(*clusterID), *systemNamespace); err != nil {
		fmt.Fprintln(os.Stderr, "istiocheck:", err)
		os.Exit(1)
	}
}

func run(kubeconfig, kubeContext string, clusterID cluster.ID, systemNamespace string) error {
	stop := make(chan struct{})
	// Closing stdin is the orderly stop: the test process holds it open.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()

	// The config cluster's client, as pilot/pkg/bootstrap's initKubeClient
	// and the namespace filter after it build it.
	restConfig, err := kube.DefaultRestConfig(kubeconfig, kubeContext)
	if err != nil {
		return fmt.Errorf("kube config: %v", err)
	}
	client, err := kube.NewClient(kube.NewClientConfigForRestConfig(restConfig), clusterID)
	if err != nil {
		return fmt.Errorf("kube client: %v", err)
	}
	client = kube.EnableCrdWatcher(client)
	meshWatcher := meshwatcher.ConfigAdapter(meshwatcher.NewCollection(krt.NewOptionsBuilder(stop, "", nil)))
	filter := namespace.NewDiscoveryNamespacesFilter(kclient.New[*corev1.Namespace](client), meshWatcher, stop)
	client = kube.SetObjectFilter(client, filter)

	// As pilot/pkg/bootstrap's initMulticluster.
	controller := multicluster.NewController(multicluster.ControllerOptions{
		Client:          client,
		ClusterID:       clusterID,
		SystemNamespace: systemNamespace,
		MeshConfig:      meshWatcher,
		ConfigOverrides: []func(*rest.Config){func(r *rest.Config) {
			r.QPS, r.Burst = 80, 160
		}},
	})
	if controller == nil {
		return fmt.Errorf("multicluster.NewController returned nil (see the log)")
	}
	// Istio's own builder decides what it accepts; this only remembers its
	// verdict, and counts the clients it built for each cluster id.
	rejected := &rejections{errors: map[string]string{}}
	var buildsMu sync.Mutex
	builds := map[cluster.ID]int{}
	controller.ClientBuilder = func(kubeConfig []byte, id cluster.ID, overrides ...func(*rest.Config)) (kube.Client, error) {
		c, err := multicluster.DefaultBuildClientsFromConfig(kubeConfig, id, overrides...)
		rejected.record(id, err)
		if err == nil {
			buildsMu.Lock()
			builds[id]++
			buildsMu.Unlock()
		}
		return c, err
	}
	peers := multicluster.BuildMultiClusterComponent(controller, func(c *multicluster.Cluster) *peer {
		return &peer{namespaces: kclient.New[*corev1.Namespace](c.Client)}
	})

	if err := controller.Run(stop); err != nil {
		return fmt.Errorf("running the secret controller: %v", err)
	}
	// Last, as in istiod: informers registered above start here.
	go client.RunAndWait(stop)
	probed := &probes{}
	go probed.run(controller, stop)

	out := bufio.NewWriter(os.Stdout)
	var last *snapshot
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		s := &snapshot{
			ConfigCluster: string(clusterID),
			Namespace:     systemNamespace,
			Synced:        controller.HasSynced(),
			Clusters:      []remoteView{},
			Rejected:      rejected.list(),
		}
		for _, info := range controller.ListRemoteClusters() {
			if info.ID == clusterID {
				continue
			}
			view := remoteView{ID: string(info.ID), Secret: info.SecretName, Status: info.SyncStatus}
			view.ClientOK, view.ClientError = probed.state(info.ID)
			if p := peers.ForCluster(info.ID); p != nil {
				view.Network = (*p).network(systemNamespace)
			}
			buildsMu.Lock()
			view.Builds = builds[info.ID]
			buildsMu.Unlock()
			s.Clusters = append(s.Clusters, view)
		}
		sort.Slice(s.Clusters, func(i, j int) bool { return s.Clusters[i].ID < s.Clusters[j].ID })
		if last == nil || !reflect.DeepEqual(last, s) {
			line, err := json.Marshal(s)
			if err != nil {
				return err
			}
			_, _ = out.Write(append(line, '\n'))
			if err := out.Flush(); err != nil {
				// Nobody reads any more: the test process is gone.
				return nil
			}
			last = s
		}
		select {
		case <-stop:
			return nil
		case <-ticker.C:
		}
	}
}
