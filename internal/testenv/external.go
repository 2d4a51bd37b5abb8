package testenv

import "github.com/moat-iot/moat/internal/server"

// ExternalServer describes a `moat server` running as its own process (a replica in
// internal/server's replica tests) for NewPlatformOn and the clients here: its listeners'
// base URLs, the CA certificate its TLS certificate chains to, and the operator token it
// printed. Fleet() and Store() of the result are nil: the server is not in this process.
func ExternalServer(url, deviceURL string, caPEM []byte, operatorToken string) *Server {
	return &Server{Server: &server.Server{URL: url, DeviceURL: deviceURL, CAPEM: caPEM},
		OperatorToken: operatorToken, Logs: &SyncBuffer{}}
}
