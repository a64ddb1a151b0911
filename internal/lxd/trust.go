package lxd

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared"
	"github.com/canonical/lxd/shared/api"
)

// NewClientCertificate makes a client certificate and its key, PEM, for
// the service to present to LXD (an ECDSA pair, as lxc makes).
func NewClientCertificate(name string) (cert, key []byte, err error) {
	cert, key, err = shared.GenerateMemCert(true, shared.CertOptions{CommonName: name})
	if err != nil {
		return nil, nil, fmt.Errorf("make a client certificate: %w", err)
	}
	return cert, key, nil
}

// Trust is what TrustWithToken did.
type Trust struct {
	URL        string // the address that answered
	ServerName string // the member, or server, that answered
	ServerCert []byte // PEM: the server's certificate, the one the token names
	Projects   []string
	Restricted bool
}

// TrustWithToken gets LXD to trust the client certificate with a token
// that `lxc config trust add [--restricted --projects P]` printed: the
// token names the server's certificate (its fingerprint), so the server is
// checked before anything is sent, and carries the projects the
// certificate is restricted to. The addresses tried are urls, then the
// token's. A certificate LXD trusts already is success.
func TrustWithToken(ctx context.Context, urls []string, clientCert, clientKey []byte, token string) (Trust, error) {
	tok, err := shared.CertificateTokenDecode(strings.TrimSpace(token))
	if err != nil {
		return Trust{}, fmt.Errorf("trust token: %w", err)
	}
	addrs := append([]string(nil), urls...)
	for _, a := range tok.Addresses {
		addrs = append(addrs, "https://"+a)
	}
	var errs []error
	for _, u := range addrs {
		t, err := trustAt(ctx, u, clientCert, clientKey, token, tok.Fingerprint)
		if err == nil {
			return t, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", u, err))
	}
	return Trust{}, errors.Join(errs...)
}

func trustAt(ctx context.Context, url string, clientCert, clientKey []byte, token, fingerprint string) (Trust, error) {
	cert, err := shared.GetRemoteCertificate(url, "lxd-gha-autoscaler")
	if err != nil {
		return Trust{}, err
	}
	if got := shared.CertFingerprint(cert); got != fingerprint {
		return Trust{}, fmt.Errorf("the server's certificate (%s) is not the one the token names (%s)", got, fingerprint)
	}
	serverPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	s, err := lxdclient.ConnectLXDWithContext(ctx, url, &lxdclient.ConnectionArgs{UserAgent: "lxd-gha-autoscaler",
		TLSClientCert: string(clientCert), TLSClientKey: string(clientKey), TLSServerCert: string(serverPEM)})
	if err != nil {
		return Trust{}, err
	}
	req := api.CertificatesPost{Type: api.CertificateTypeClient}
	if s.HasExtension("explicit_trust_token") {
		req.TrustToken = token
	} else {
		req.Password = token // LXD 5.0 takes the token in place of the trust password
	}
	if err := s.CreateCertificate(req); err != nil && !api.StatusErrorCheck(err, http.StatusConflict) {
		return Trust{}, fmt.Errorf("add the certificate: %w", err)
	}
	srv, _, err := s.GetServer()
	if err != nil {
		return Trust{}, err
	}
	if srv.Auth != "trusted" {
		return Trust{}, errors.New("the server does not trust the certificate after taking the token")
	}
	t := Trust{URL: url, ServerName: srv.Environment.ServerName, ServerCert: serverPEM}
	if block, _ := pem.Decode(clientCert); block != nil {
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			if got, _, err := s.GetCertificate(shared.CertFingerprint(c)); err == nil {
				t.Restricted, t.Projects = got.Restricted, got.Projects
			}
		}
	}
	return t, nil
}
