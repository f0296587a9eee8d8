package main

// What a sidecar does to get its workload certificate from istiod's CA, and
// the cacerts Secret istiod's CA starts on.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"istio.io/istio/pkg/security"
	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	pkiutil "istio.io/istio/security/pkg/pki/util"
)

const (
	// The Secret of Istio's plug-in CA, mounted at ./etc/cacerts
	// (pilot/pkg/bootstrap/istio_ca.go, LocalCertDir).
	caCertsSecret = "cacerts"
	// The ConfigMap istiod publishes its roots in, in every namespace
	// (pilot/pkg/serviceregistry/kube/controller/namespacecontroller.go); a
	// sidecar mounts it to trust istiod's serving certificate.
	rootCertConfigMap = "istio-ca-root-cert"
	// The audience of the token a sidecar presents (the chart's istio-token
	// projected volume; pkg/security/security.go TokenAudiences).
	caTokenAudience = "istio-ca"
	// The name istiod's DNS certificate carries and a sidecar checks
	// (pilot/pkg/bootstrap/server.go getDNSNames; the discovery address).
	istiodSAN = "istiod.%s.svc"
	// A sidecar's default certificate lifetime (SECRET_TTL, 24h).
	workloadCertTTL = 24 * time.Hour
)

// writeCACerts copies the cacerts Secret of namespace into caDir, one file
// per key, as the Secret's volume mount would (istiod reads ca-cert.pem,
// ca-key.pem, root-cert.pem and cert-chain.pem there;
// security/pkg/pki/ca/ca.go NewPluggedCertIstioCAOptions).
func writeCACerts(client kubernetes.Interface, namespace, caDir string) error {
	secret, err := client.CoreV1().Secrets(namespace).Get(context.Background(), caCertsSecret, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading Secret %s/%s: %v", namespace, caCertsSecret, err)
	}
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return err
	}
	for _, name := range []string{caCertFile, caKeyFile, rootCertFile, certChainFile} {
		data, ok := secret.Data[name]
		if !ok {
			return fmt.Errorf("Secret %s/%s has no %s", namespace, caCertsSecret, name)
		}
		if err := os.WriteFile(filepath.Join(caDir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// workloadCert is what istiod's CA answered a sidecar: the chain it
// returned (leaf first, root last; public), or why it has not (yet).
type workloadCert struct {
	Identity string   `json:"identity"`
	Chain    []string `json:"chain,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// workloadRequester asks istiod's CA for one certificate, retrying until it
// gets one: istiod publishes the root the sidecar trusts it with, and starts
// its CA service, moments after it starts.
type workloadRequester struct {
	client    kubernetes.Interface
	namespace string
	account   string
	clusterID string
	meshNS    string
	caAddr    string
	dir       string

	mu     sync.Mutex
	result workloadCert
}

func newWorkloadRequester(config *rest.Config, spec, clusterID, meshNS, caAddr, dir string) (*workloadRequester, error) {
	namespace, account, ok := strings.Cut(spec, "/")
	if !ok || namespace == "" || account == "" {
		return nil, fmt.Errorf("want NAMESPACE/SERVICEACCOUNT, got %q", spec)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	r := &workloadRequester{
		client: client, namespace: namespace, account: account, clusterID: clusterID,
		meshNS: meshNS, caAddr: caAddr, dir: dir,
	}
	r.result.Identity = spiffe.Identity{TrustDomain: "cluster.local", Namespace: namespace, ServiceAccount: account}.String()
	return r, nil
}

func (r *workloadRequester) view() *workloadCert {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.result
	return &out
}

func (r *workloadRequester) run(stop <-chan struct{}) {
	for {
		chain, err := r.request()
		r.mu.Lock()
		if err == nil {
			r.result.Chain, r.result.Error = chain, ""
		} else {
			r.result.Error = err.Error()
		}
		r.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// request does what a sidecar's agent does for its first certificate
// (security/pkg/nodeagent/cache/secretcache.go generateNewSecret): a CSR
// for its SPIFFE identity, sent by Istio's own CA client
// (security/pkg/nodeagent/caclient/providers/citadel/client.go) over TLS to
// istiod's secure port, trusting the root istiod published in the
// workload's namespace, with a ServiceAccount token of audience istio-ca
// that istiod reviews with the API server
// (security/pkg/server/ca/authenticate/kubeauth/kube_jwt.go).
func (r *workloadRequester) request() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	roots, err := r.client.CoreV1().ConfigMaps(r.namespace).Get(ctx, rootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading %s/%s: %v", r.namespace, rootCertConfigMap, err)
	}
	rootFile := filepath.Join(r.dir, "root-cert.pem")
	if err := os.WriteFile(rootFile, []byte(roots.Data["root-cert.pem"]), 0o600); err != nil {
		return nil, err
	}
	expiry := int64(600)
	token, err := r.client.CoreV1().ServiceAccounts(r.namespace).CreateToken(ctx, r.account,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{caTokenAudience}, ExpirationSeconds: &expiry,
		}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("requesting a token for %s/%s: %v", r.namespace, r.account, err)
	}
	client, err := citadel.NewCitadelClient(&security.Options{
		CAEndpoint:    r.caAddr,
		CAEndpointSAN: fmt.Sprintf(istiodSAN, r.meshNS),
		ClusterID:     r.clusterID,
		CredFetcher:   staticToken(token.Status.Token),
	}, &citadel.TLSOptions{RootCert: rootFile})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	// The sidecar's defaults: an RSA 2048 key (WORKLOAD_RSA_KEY_SIZE).
	csr, _, err := pkiutil.GenCSR(pkiutil.CertOptions{Host: r.view().Identity, RSAKeySize: 2048})
	if err != nil {
		return nil, err
	}
	chain, err := client.CSRSign(csr, int64(workloadCertTTL.Seconds()))
	if err != nil {
		return nil, err
	}
	if len(chain) == 0 {
		return nil, errors.New("an empty chain")
	}
	return chain, nil
}

// staticToken is the sidecar's mounted token (security.CredFetcher).
type staticToken string

func (t staticToken) GetPlatformCredential() (string, error) { return string(t), nil }
func (t staticToken) GetIdentityProvider() string            { return "" }
func (t staticToken) Stop()                                  {}
