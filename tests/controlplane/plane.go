package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// plane is the process-wide state: one etcd shared by every cluster (each
// under its own key prefix), the clusters by id, and the control endpoint.
type plane struct {
	root       string
	etcd       *embed.Etcd
	etcdURL    string
	control    *controlServer
	kubeconfig string

	// startMu serialises apiserver starts and stops: kube-apiserver setup
	// touches process-global registries (feature gates, metrics, admission
	// plugins) that are not safe to initialise concurrently.
	startMu sync.Mutex

	mu       sync.Mutex
	clusters map[string]*cluster
	order    []string
	batches  int
}

func newPlane(root string) (*plane, error) {
	p := &plane{root: root, clusters: map[string]*cluster{}}
	if err := p.startEtcd(); err != nil {
		return nil, err
	}
	control, err := newControlServer(p)
	if err != nil {
		p.etcd.Close()
		return nil, err
	}
	p.control = control
	p.kubeconfig = filepath.Join(root, "kubeconfig")
	return p, nil
}

// freePort asks the kernel for an unused loopback port. Another process may
// take it before etcd binds it; startEtcd retries for that reason.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (p *plane) startEtcd() error {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		clientPort, err := freePort()
		if err != nil {
			return err
		}
		peerPort, err := freePort()
		if err != nil {
			return err
		}
		cfg := embed.NewConfig()
		cfg.Name = "meshform-test"
		cfg.Dir = filepath.Join(p.root, "etcd")
		// A test plane never outlives its process, so durability buys nothing.
		cfg.UnsafeNoFsync = true
		clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
		peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(zapcore.NewCore(
			zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
			zapcore.Lock(os.Stderr),
			zapcore.ErrorLevel,
		)))
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return err
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			os.RemoveAll(cfg.Dir)
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(60 * time.Second):
			e.Close()
			return fmt.Errorf("etcd did not become ready in 60s")
		}
		p.etcd = e
		p.etcdURL = clientURL.String()
		return nil
	}
	return fmt.Errorf("starting etcd: %w", lastErr)
}

// sanitize turns a kubeconfig context name (which may hold underscores,
// dots or capitals, like gke_proj_europe-west1_prod) into a DNS label usable
// for etcd prefixes, directories and issuer host names.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = strings.Trim(s[:40], "-")
	}
	if s == "" {
		s = "cluster"
	}
	return s
}

// clusterInfo is what callers learn about one cluster.
type clusterInfo struct {
	Name          string `json:"name"`
	ID            string `json:"id"`
	Server        string `json:"server"`
	KubeSystemUID string `json:"kube_system_uid"`
	Kubeconfig    string `json:"kubeconfig"`
	Running       bool   `json:"running"`
	LatencyMillis int64  `json:"latency_ms"`
}

type readyLine struct {
	Ready      bool                   `json:"ready"`
	Kubeconfig string                 `json:"kubeconfig"`
	Control    string                 `json:"control"`
	Etcd       string                 `json:"etcd"`
	Clusters   map[string]clusterInfo `json:"clusters"`
}

func (p *plane) readyLine() readyLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := readyLine{Ready: true, Kubeconfig: p.kubeconfig, Control: p.control.addr, Etcd: p.etcdURL, Clusters: map[string]clusterInfo{}}
	for _, id := range p.order {
		c := p.clusters[id]
		r.Clusters[c.name] = c.info()
	}
	return r
}

// addClusters starts one cluster per name and writes a kubeconfig holding
// exactly these clusters, one context each, named as given. Names must be
// unique within one call; across calls they may repeat (each test may want
// its own "east" and "west"), and ids stay unique within the plane.
func (p *plane) addClusters(names []string) ([]clusterInfo, error) {
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" {
			return nil, fmt.Errorf("empty cluster name")
		}
		if seen[n] {
			return nil, fmt.Errorf("cluster name %q given twice", n)
		}
		seen[n] = true
	}

	p.mu.Lock()
	batch := p.batches
	p.batches++
	var added []*cluster
	for _, n := range names {
		id := sanitize(n)
		for i := 2; p.clusters[id] != nil; i++ {
			id = fmt.Sprintf("%s-%d", sanitize(n), i)
		}
		c := newCluster(p, n, id)
		p.clusters[id] = c
		p.order = append(p.order, id)
		added = append(added, c)
	}
	p.mu.Unlock()

	kubeconfig := p.kubeconfig
	if batch > 0 {
		kubeconfig = filepath.Join(p.root, fmt.Sprintf("kubeconfig-%d", batch))
	}
	for _, c := range added {
		c.mu.Lock()
		c.kubeconfig = kubeconfig
		c.mu.Unlock()
		if err := c.prepare(); err != nil {
			p.removeClusters(added)
			return nil, fmt.Errorf("cluster %q: %w", c.name, err)
		}
		if err := c.start(); err != nil {
			p.removeClusters(added)
			return nil, fmt.Errorf("cluster %q: %w", c.name, err)
		}
	}
	if err := writeKubeconfig(kubeconfig, added); err != nil {
		p.removeClusters(added)
		return nil, err
	}
	infos := make([]clusterInfo, 0, len(added))
	for _, c := range added {
		infos = append(infos, c.info())
	}
	return infos, nil
}

func (p *plane) removeClusters(cs []*cluster) {
	for _, c := range cs {
		c.remove()
		p.mu.Lock()
		delete(p.clusters, c.id)
		for i, id := range p.order {
			if id == c.id {
				p.order = append(p.order[:i], p.order[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
	}
	// Tests add and delete clusters all run long; hand the freed heap back
	// so the plane's RSS tracks the clusters alive, not the most ever alive.
	debug.FreeOSMemory()
}

// lookup finds a cluster by id, or by name when exactly one cluster has it.
func (p *plane) lookup(key string) (*cluster, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.clusters[key]; c != nil {
		return c, nil
	}
	var found *cluster
	for _, c := range p.clusters {
		if c.name == key {
			if found != nil {
				return nil, fmt.Errorf("cluster name %q is ambiguous; use its id", key)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no cluster %q", key)
	}
	return found, nil
}

func (p *plane) list() []clusterInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]clusterInfo, 0, len(p.order))
	for _, id := range p.order {
		out = append(out, p.clusters[id].info())
	}
	return out
}

func (p *plane) close() {
	if p.control != nil {
		p.control.close()
	}
	p.mu.Lock()
	all := make([]*cluster, 0, len(p.order))
	for _, id := range p.order {
		all = append(all, p.clusters[id])
	}
	p.mu.Unlock()
	p.removeClusters(all)
	if p.etcd != nil {
		p.etcd.Close()
	}
}

func writeKubeconfig(path string, cs []*cluster) error {
	cfg := clientcmdapi.NewConfig()
	for _, c := range cs {
		cfg.Clusters[c.name] = &clientcmdapi.Cluster{
			Server:                   c.server(),
			CertificateAuthorityData: c.caPEM,
		}
		cfg.AuthInfos[c.name] = &clientcmdapi.AuthInfo{Token: c.adminToken}
		cfg.Contexts[c.name] = &clientcmdapi.Context{Cluster: c.name, AuthInfo: c.name}
	}
	if len(cs) > 0 {
		cfg.CurrentContext = cs[0].name
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// writeFileAtomic makes readers see either no file or the whole file.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
