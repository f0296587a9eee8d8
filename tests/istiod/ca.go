package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// The files of Istio's plug-in CA layout (security/pkg/pki/ca: the cacerts
// Secret's keys, read from ROOT_CA_DIR, ./etc/cacerts by default).
const (
	rootCertFile  = "root-cert.pem"
	rootKeyFile   = "root-key.pem"
	caCertFile    = "ca-cert.pem"
	caKeyFile     = "ca-key.pem"
	certChainFile = "cert-chain.pem"
)

// makeRoot writes a new self-signed root CA (root-cert.pem, root-key.pem)
// into dir, as Istio's tools/certs/Makefile.selfsigned.mk does for a mesh
// whose clusters must share one root of trust.
func makeRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	template := caTemplate("Root CA", 10*365*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("creating the root certificate: %v", err)
	}
	if err := writePEM(filepath.Join(dir, rootCertFile), "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, rootKeyFile), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
}

// plugInIntermediate signs an intermediate CA for clusterID with the root in
// rootDir and writes it, with the root and the chain, into caDir: what the
// cacerts Secret holds once mounted (Istio's "Plug in CA certificates" task).
func plugInIntermediate(rootDir, caDir, clusterID string) error {
	rootCertPEM, err := os.ReadFile(filepath.Join(rootDir, rootCertFile))
	if err != nil {
		return err
	}
	rootKeyPEM, err := os.ReadFile(filepath.Join(rootDir, rootKeyFile))
	if err != nil {
		return err
	}
	rootCert, err := parsePEM(rootCertPEM, x509.ParseCertificate)
	if err != nil {
		return err
	}
	rootKey, err := parsePEM(rootKeyPEM, x509.ParsePKCS1PrivateKey)
	if err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	template := caTemplate("Intermediate CA "+clusterID, 2*365*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, template, rootCert, &key.PublicKey, rootKey)
	if err != nil {
		return fmt.Errorf("signing the intermediate certificate: %v", err)
	}
	if err := os.MkdirAll(caDir, 0o700); err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	files := map[string][]byte{
		caCertFile:    caPEM,
		caKeyFile:     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		rootCertFile:  rootCertPEM,
		certChainFile: append(append([]byte{}, caPEM...), rootCertPEM...),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(caDir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func caTemplate(commonName string, lifetime time.Duration) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"Istio"}, CommonName: commonName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

func parsePEM[T any](data []byte, parse func([]byte) (T, error)) (T, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		var zero T
		return zero, errors.New("no PEM block")
	}
	return parse(block.Bytes)
}
