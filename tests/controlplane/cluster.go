package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/compatibility"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

// cluster is one kube-apiserver with its own etcd prefix, CA, serving
// certificate, service-account issuer and key, and admin token, reached
// through a proxy whose port never changes across stop and start.
type cluster struct {
	plane      *plane
	name       string // kubeconfig context name, as the caller gave it
	id         string // unique in the plane, DNS-label safe
	dir        string
	kubeconfig string

	caPEM      []byte
	certFile   string
	keyFile    string
	saKeyFile  string
	tokenFile  string
	adminToken string
	issuer     string

	proxy *proxy
	// HTTP-level faults in front of the apiserver's handler chain.
	faults faults

	mu            sync.Mutex
	running       bool
	kubeSystemUID string
	cancel        context.CancelFunc
	serverDone    chan struct{}
	ctrlDone      chan struct{}
}

func newCluster(p *plane, name, id string) *cluster {
	return &cluster{
		plane: p,
		name:  name,
		id:    id,
		dir:   filepath.Join(p.root, "clusters", id),
		// Each cluster its own issuer: TokenRequest tokens name it, and the
		// other clusters neither know the issuer nor hold the key.
		issuer: "https://" + id + ".clusters.meshform.test",
	}
}

func (c *cluster) server() string { return "https://" + c.proxy.addr }

func (c *cluster) info() clusterInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	info := clusterInfo{
		Name:          c.name,
		ID:            c.id,
		KubeSystemUID: c.kubeSystemUID,
		Kubeconfig:    c.kubeconfig,
		Running:       c.running,
	}
	// A cluster listed while another request is still preparing it has no proxy yet.
	if c.proxy != nil {
		info.Server = c.server()
		info.LatencyMillis = c.proxy.latency().Milliseconds()
	}
	return info
}

// prepare makes the cluster's credentials and reserves its public port.
func (c *cluster) prepare() error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	caKey, caCert, err := newCA("meshform-test-ca-" + c.id)
	if err != nil {
		return err
	}
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})
	certPEM, keyPEM, err := newServingCert(caKey, caCert, c.id)
	if err != nil {
		return err
	}
	c.certFile = filepath.Join(c.dir, "serving.crt")
	c.keyFile = filepath.Join(c.dir, "serving.key")
	if err := os.WriteFile(c.certFile, certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(c.keyFile, keyPEM, 0o600); err != nil {
		return err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	c.saKeyFile = filepath.Join(c.dir, "service-account.key")
	if err := os.WriteFile(c.saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}), 0o600); err != nil {
		return err
	}

	token := make([]byte, 32)
	if _, err := rand.Read(token); err != nil {
		return err
	}
	c.adminToken = base64.RawURLEncoding.EncodeToString(token)
	c.tokenFile = filepath.Join(c.dir, "tokens.csv")
	// token,user,uid,"groups": system:masters bypasses RBAC, as a cluster admin's credentials do.
	line := fmt.Sprintf("%s,meshform-admin,meshform-admin,\"system:masters\"\n", c.adminToken)
	if err := os.WriteFile(c.tokenFile, []byte(line), 0o600); err != nil {
		return err
	}

	proxy, err := newProxy()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.proxy = proxy
	c.mu.Unlock()
	return nil
}

func newCA(commonName string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

// newServingCert issues a leaf for 127.0.0.1, ::1 and localhost: rustls
// (kube-rs) checks IP SANs strictly and refuses a CA used as a leaf.
func newServingCert(caKey *ecdsa.PrivateKey, ca *x509.Certificate, id string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kube-apiserver-" + id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// adminConfig reaches the apiserver directly, not through the proxy, so
// that injected latency never slows the cluster's own controllers.
func (c *cluster) adminConfig(backend string) *rest.Config {
	return &rest.Config{
		Host:            "https://" + backend,
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             100,
		Burst:           200,
	}
}

// start runs the apiserver on a fresh backend port, waits until it is ready,
// seeds it (istio-system, CRDs), starts its controllers and then opens the
// public port. Data survives stop and start: it lives in etcd under the
// cluster's prefix.
func (c *cluster) start() error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()

	c.plane.startMu.Lock()
	defer c.plane.startMu.Unlock()

	began := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	backend, serverDone, err := c.startAPIServer(ctx)
	if err != nil {
		cancel()
		if serverDone != nil {
			<-serverDone
		}
		return err
	}
	cfg := c.adminConfig(backend)
	fail := func(err error) error {
		cancel()
		<-serverDone
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fail(err)
	}
	uid, err := seed(ctx, cfg, client)
	if err != nil {
		return fail(fmt.Errorf("seeding: %w", err))
	}
	ctrlDone, err := startControllers(ctx, cfg, c.caPEM, c.saKeyFile)
	if err != nil {
		return fail(fmt.Errorf("controllers: %w", err))
	}
	if err := c.proxy.open(backend); err != nil {
		cancel()
		<-ctrlDone
		<-serverDone
		return err
	}

	c.mu.Lock()
	c.running = true
	c.kubeSystemUID = uid
	c.cancel = cancel
	c.serverDone = serverDone
	c.ctrlDone = ctrlDone
	c.mu.Unlock()
	klog.Infof("meshform-controlplane: cluster %q (%s) serving on %s in %s", c.name, c.id, c.proxy.addr, time.Since(began).Round(time.Millisecond))
	return nil
}

func (c *cluster) startAPIServer(ctx context.Context) (backend string, done chan struct{}, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port

	s := options.NewServerRunOptions()
	// A registry of its own per server, as upstream's test server does: the
	// default one may be Set only once per process.
	featureGate := utilfeature.DefaultMutableFeatureGate.DeepCopy()
	effectiveVersion := compatibility.DefaultBuildEffectiveVersion()
	effectiveVersion.SetEmulationVersion(featureGate.EmulationVersion())
	effectiveVersion.SetMinCompatibilityVersion(featureGate.MinCompatibilityVersion())
	registry := basecompatibility.NewComponentGlobalsRegistry()
	if err := registry.Register(basecompatibility.DefaultKubeComponent, effectiveVersion, featureGate); err != nil {
		ln.Close()
		return "", nil, err
	}
	s.GenericServerRunOptions.ComponentGlobalsRegistry = registry

	fs := pflag.NewFlagSet("kube-apiserver-"+c.id, pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	args := []string{
		"--advertise-address=127.0.0.1",
		"--bind-address=127.0.0.1",
		"--cert-dir=" + c.dir,
		"--tls-cert-file=" + c.certFile,
		"--tls-private-key-file=" + c.keyFile,
		"--etcd-servers=" + c.plane.etcdURL,
		"--etcd-prefix=/meshform/" + c.id,
		"--token-auth-file=" + c.tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + c.issuer,
		"--service-account-key-file=" + c.saKeyFile,
		"--service-account-signing-key-file=" + c.saKeyFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		// The "external" address is loopback: nothing to reconcile endpoints for.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		// Flow control spawns per-server machinery that tests never exercise.
		"--enable-priority-and-fairness=false",
	}
	if err := fs.Parse(args); err != nil {
		ln.Close()
		return "", nil, err
	}
	s.SecureServing.Listener = ln
	s.SecureServing.BindPort = port
	if err := registry.Set(); err != nil {
		ln.Close()
		return "", nil, err
	}

	completed, err := s.Complete(ctx)
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("completing options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		ln.Close()
		return "", nil, fmt.Errorf("validating options: %v", errors.Join(errs...))
	}
	config, err := app.NewConfig(completed)
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	// The aggregator's chain is the outermost one the secure port serves.
	chain := config.Aggregator.GenericConfig.BuildHandlerChainFunc
	config.Aggregator.GenericConfig.BuildHandlerChainFunc = func(h http.Handler, cfg *genericapiserver.Config) http.Handler {
		return c.faults.wrap(chain(h, cfg))
	}
	completedConfig, err := config.Complete()
	if err != nil {
		ln.Close()
		return "", nil, err
	}
	server, err := app.CreateServerChain(completedConfig)
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("creating server chain: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		ln.Close()
		return "", nil, err
	}

	done = make(chan struct{})
	errCh := make(chan error, 1)
	go func() {
		defer close(done)
		if err := prepared.Run(ctx); err != nil {
			klog.Errorf("meshform-controlplane: apiserver %s: %v", c.id, err)
			errCh <- err
		}
	}()

	backend = fmt.Sprintf("127.0.0.1:%d", port)
	client, err := kubernetes.NewForConfig(c.adminConfig(backend))
	if err != nil {
		return "", done, err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-errCh:
			return false, err
		default:
		}
		status := 0
		client.CoreV1().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&status)
		return status == 200, nil
	})
	if err != nil {
		return "", done, fmt.Errorf("waiting for /readyz: %w", err)
	}
	return backend, done, nil
}

// stop closes the public port (new connections are refused, open ones cut)
// and shuts the apiserver and its controllers down.
func (c *cluster) stop() {
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return
	}
	c.running = false
	cancel, serverDone, ctrlDone := c.cancel, c.serverDone, c.ctrlDone
	c.mu.Unlock()

	c.plane.startMu.Lock()
	defer c.plane.startMu.Unlock()
	c.proxy.shut()
	cancel()
	for _, ch := range []chan struct{}{ctrlDone, serverDone} {
		select {
		case <-ch:
		case <-time.After(60 * time.Second):
			klog.Errorf("meshform-controlplane: cluster %s did not stop in 60s", c.id)
		}
	}
}

// remove stops the cluster and deletes its files and its etcd keys.
func (c *cluster) remove() {
	c.stop()
	if c.proxy != nil {
		c.proxy.close()
	}
	os.RemoveAll(c.dir)
	if c.plane.etcd != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		deleteEtcdPrefix(ctx, c.plane.etcdURL, "/meshform/"+c.id+"/")
	}
}

// seed makes the cluster look like one Istio is installed in: the mesh
// namespace and the CRDs meshform writes. It returns kube-system's UID, which
// identifies the cluster the way Istio's cluster ID discovery does.
func seed(ctx context.Context, cfg *rest.Config, client kubernetes.Interface) (string, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	if err := installCRDs(ctx, cfg); err != nil {
		return "", err
	}
	var uid string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		ns, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		uid = string(ns.UID)
		return true, nil
	})
	return uid, err
}
