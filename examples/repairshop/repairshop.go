// Package repairshop is a small reference repair shop inventory service: the other side
// of the contract moat cloud's reserve-part action speaks (docs/repair-shop-api.md,
// openapi.json). It keeps its stock in memory from a seed file, reserves parts by
// idempotency key, and answers errors as RFC 9457 problems. `moat demo` runs a Server in
// process; cmd/repairshop runs one on its own.
//
// Everything a caller sends is bounded: request bodies (MaxBodyBytes), headers (the
// http.Server's limits and timeouts, HTTPServer), the idempotency keys remembered
// (Config.MaxReservations). Every route but /openapi.json needs the bearer token,
// compared in constant time. It uses only public APIs, like the other examples. A Server
// is safe for concurrent use.
package repairshop

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

//go:embed openapi.json
var openAPI []byte

// OpenAPI returns the contract as an OpenAPI 3.1 document.
func OpenAPI() []byte { return slices.Clone(openAPI) }

// Limits.
const (
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 4 << 10
	// MaxParts bounds the stock seed.
	MaxParts = 10000
	// MaxStockFileBytes bounds the stock seed file.
	MaxStockFileBytes = 1 << 20
	// ProblemBase prefixes the problem types.
	ProblemBase = "urn:moat:repair-shop:"
)

var (
	partRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	keyRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}$`)
	deviceRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	productRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	refRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$`)
)

// Config shapes a Server.
type Config struct {
	// Stock is the seed: part number to count.
	Stock map[string]int
	// Token is the bearer token that may reserve; ReadOnlyToken ('' none) may only look
	// stock up (a reservation with it is 403).
	Token         string
	ReadOnlyToken string
	// MaxReservations bounds the reservations remembered by idempotency key; past it,
	// expired ones are forgotten, and if none has expired a new one is refused with 503.
	MaxReservations int
	// ReservationTTL is how long a reservation holds its part.
	ReservationTTL time.Duration
	Now            func() time.Time
	Logger         *slog.Logger
}

// DefaultConfig returns a configuration without stock or token.
func DefaultConfig() Config {
	return Config{MaxReservations: 10000, ReservationTTL: 72 * time.Hour, Now: time.Now, Logger: slog.New(slog.DiscardHandler)}
}

// Validate reports every problem of c.
func (c Config) Validate() error {
	var errs []error
	if len(c.Token) < 16 {
		errs = append(errs, errors.New("token: at least 16 bytes"))
	}
	if c.ReadOnlyToken != "" && (len(c.ReadOnlyToken) < 16 || c.ReadOnlyToken == c.Token) {
		errs = append(errs, errors.New("read-only token: at least 16 bytes, not the token"))
	}
	if len(c.Stock) > MaxParts {
		errs = append(errs, fmt.Errorf("stock: more than %d parts", MaxParts))
	}
	for p, n := range c.Stock {
		if !partRE.MatchString(p) || n < 0 || n > 1e9 {
			errs = append(errs, fmt.Errorf("stock: part %q: a part number and a count of 0 to 1e9", p))
		}
	}
	if c.MaxReservations < 1 || c.MaxReservations > 1e6 {
		errs = append(errs, errors.New("max reservations: 1 to 1e6"))
	}
	if c.ReservationTTL < time.Minute {
		errs = append(errs, errors.New("reservation ttl: at least 1m"))
	}
	if c.Now == nil || c.Logger == nil {
		errs = append(errs, errors.New("now and logger: required"))
	}
	return errors.Join(errs...)
}

// Reservation is a reservation as the shop keeps it.
type Reservation struct {
	ID          string    `json:"id"`
	Part        string    `json:"part"`
	State       string    `json:"state"`
	ExpiresAt   time.Time `json:"expires_at"`
	Device      string    `json:"-"`
	Product     string    `json:"-"`
	CustomerRef string    `json:"-"`
	Reason      string    `json:"-"`
	Key         string    `json:"-"`
}

type entry struct {
	bodyHash [32]byte
	res      Reservation
}

// Server is the reference shop.
type Server struct {
	cfg   Config
	mux   *http.ServeMux
	mu    sync.Mutex
	stock map[string]int
	byKey map[string]*entry
	seq   int
	// Requests counts requests that passed the token check, per route pattern.
	requests map[string]int
}

// New returns a shop with cfg's stock.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, stock: maps.Clone(cfg.Stock), byKey: map[string]*entry{}, requests: map[string]int{}}
	if s.stock == nil {
		s.stock = map[string]int{}
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
	s.mux.HandleFunc("GET /v1/parts/{part}", s.auth(false, s.getPart))
	s.mux.HandleFunc("POST /v1/reservations", s.auth(true, s.reserve))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		problem(w, http.StatusNotFound, "not-found", "no such resource")
	})
	return s, nil
}

// ServeHTTP serves the contract.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for s on addr with bounded headers and timeouts.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr: addr, Handler: s,
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
}

// Stock returns the count of part in stock.
func (s *Server) Stock(part string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stock[part]
}

// SetStock sets the count of part (a delivery, or a test).
func (s *Server) SetStock(part string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stock[part] = n
}

// Reservations returns the reservations held, by ID.
func (s *Server) Reservations() []Reservation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Reservation, 0, len(s.byKey))
	for _, e := range s.byKey {
		out = append(out, e.res)
	}
	slices.SortFunc(out, func(a, b Reservation) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Requests returns how many authenticated requests reached route ("POST /v1/reservations").
func (s *Server) Requests(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[route]
}

// auth checks the bearer token in constant time before anything of the request is read:
// 401 without a valid one, 403 for the read-only token where reserving is asked.
func (s *Server) auth(reserving bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		full := ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Token)) == 1
		ro := ok && s.cfg.ReadOnlyToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.ReadOnlyToken)) == 1
		switch {
		case !full && !ro:
			w.Header().Set("WWW-Authenticate", `Bearer realm="repairshop"`)
			problem(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
			return
		case reserving && !full:
			problem(w, http.StatusForbidden, "forbidden", "this token may not reserve parts")
			return
		}
		s.mu.Lock()
		s.requests[r.Pattern]++
		s.mu.Unlock()
		next(w, r)
	}
}

func (s *Server) getPart(w http.ResponseWriter, r *http.Request) {
	part := r.PathValue("part")
	s.mu.Lock()
	n, ok := s.stock[part]
	s.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "not-found", "the shop does not carry this part")
		return
	}
	reply(w, http.StatusOK, map[string]any{"part": part, "in_stock": n})
}

type reservationRequest struct {
	Part        string `json:"part"`
	Device      string `json:"device"`
	Product     string `json:"product"`
	CustomerRef string `json:"customer_ref"`
	Reason      string `json:"reason"`
}

func (q reservationRequest) validate() []string {
	var bad []string
	if !partRE.MatchString(q.Part) {
		bad = append(bad, "part: a part number")
	}
	if !deviceRE.MatchString(q.Device) {
		bad = append(bad, "device: 64 lower-case hex digits")
	}
	if !productRE.MatchString(q.Product) {
		bad = append(bad, "product: 1 to 64 letters, digits, '_', '.' or '-'")
	}
	if !refRE.MatchString(q.CustomerRef) {
		bad = append(bad, "customer_ref: 1 to 128 letters, digits or _.:@-")
	}
	if len(q.Reason) > 500 || strings.ContainsFunc(q.Reason, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		bad = append(bad, "reason: at most 500 bytes of one line")
	}
	return bad
}

func (s *Server) reserve(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		problem(w, http.StatusUnsupportedMediaType, "unsupported-media-type", "the body must be application/json")
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if !keyRE.MatchString(key) {
		problem(w, http.StatusUnprocessableEntity, "invalid-request", "Idempotency-Key: 1 to 200 letters, digits or _.:@- required")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			problem(w, http.StatusRequestEntityTooLarge, "too-large", fmt.Sprintf("the body is more than %d bytes", MaxBodyBytes))
			return
		}
		problem(w, http.StatusBadRequest, "invalid-request", "the body could not be read")
		return
	}
	var q reservationRequest
	if err := decodeStrict(body, &q); err != nil {
		problem(w, http.StatusBadRequest, "invalid-request", "the body must be one JSON object of the documented fields: "+err.Error())
		return
	}
	if bad := q.validate(); len(bad) > 0 {
		problem(w, http.StatusUnprocessableEntity, "invalid-request", strings.Join(bad, "; "))
		return
	}
	hash := sha256.Sum256(body)
	status, res, code, detail := s.book(key, hash, q)
	if code != "" {
		problem(w, status, code, detail)
		return
	}
	reply(w, status, res)
}

// book reserves one part under key: the same key and body again is the same reservation.
func (s *Server) book(key string, hash [32]byte, q reservationRequest) (int, Reservation, string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if e, ok := s.byKey[key]; ok {
		if e.bodyHash != hash {
			return http.StatusConflict, Reservation{}, "idempotency-key-reused", "this Idempotency-Key was used for another request"
		}
		return http.StatusOK, e.res, "", ""
	}
	n, carried := s.stock[q.Part]
	if !carried || n <= 0 {
		return http.StatusConflict, Reservation{}, "out-of-stock", fmt.Sprintf("part %s is out of stock", q.Part)
	}
	if len(s.byKey) >= s.cfg.MaxReservations {
		for k, e := range s.byKey {
			if !e.res.ExpiresAt.After(now) {
				delete(s.byKey, k)
			}
		}
		if len(s.byKey) >= s.cfg.MaxReservations {
			return http.StatusServiceUnavailable, Reservation{}, "full", "the shop holds too many reservations; try later"
		}
	}
	s.seq++
	s.stock[q.Part] = n - 1
	res := Reservation{ID: fmt.Sprintf("R-%06d", s.seq), Part: q.Part, State: "reserved", ExpiresAt: now.Add(s.cfg.ReservationTTL).UTC().Truncate(time.Second),
		Device: q.Device, Product: q.Product, CustomerRef: q.CustomerRef, Reason: q.Reason, Key: key}
	s.byKey[key] = &entry{bodyHash: hash, res: res}
	s.cfg.Logger.Info("part reserved", "reservation", res.ID, "part", q.Part, "customer_ref", q.CustomerRef)
	return http.StatusCreated, res, "", ""
}

// decodeStrict decodes one JSON object of valid UTF-8 with no unknown fields and nothing
// after it.
func decodeStrict(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if !utf8.Valid(data) || len(data) == 0 || data[0] != '{' {
		return errors.New("not a JSON object of valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.InputOffset() != int64(len(data)) {
		return errors.New("data after the JSON object")
	}
	return nil
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

var titles = map[int]string{400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
	413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content", 503: "Service Unavailable"}

// problem writes an RFC 9457 problem document.
func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"type": ProblemBase + code, "title": titles[status], "status": status, "detail": detail})
}

// StockFile is the stock seed file, YAML or JSON:
//
//	version: 1
//	parts:
//	  DW100-HTR-2: 3
type StockFile struct {
	Version int                  `yaml:"version"`
	Parts   map[string]yaml.Node `yaml:"parts"`
}

// LoadStock reads a stock seed file strictly: unknown fields, a version other than 1 and
// bad part numbers or counts are errors.
func LoadStock(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxStockFileBytes+1))
	if err != nil {
		return nil, err
	}
	return ParseStock(data)
}

// ParseStock reads a stock seed's bytes (see StockFile).
func ParseStock(data []byte) (map[string]int, error) {
	if len(data) > MaxStockFileBytes {
		return nil, fmt.Errorf("stock file: more than %d bytes", MaxStockFileBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var sf StockFile
	if err := dec.Decode(&sf); err != nil {
		return nil, fmt.Errorf("stock file: %w", err)
	}
	if sf.Version != 1 {
		return nil, errors.New("stock file: version must be 1")
	}
	if len(sf.Parts) > MaxParts {
		return nil, fmt.Errorf("stock file: more than %d parts", MaxParts)
	}
	var errs []error
	out := make(map[string]int, len(sf.Parts))
	for p, node := range sf.Parts {
		// A count is a whole number as written: yaml.v3 would truncate 1.5 into an int.
		n, err := strconv.Atoi(node.Value)
		if !partRE.MatchString(p) || node.Kind != yaml.ScalarNode || node.Tag != "!!int" || err != nil || n < 0 || n > 1e9 {
			errs = append(errs, fmt.Errorf("stock file: part %q: a part number and a whole count of 0 to 1e9", p))
			continue
		}
		out[p] = n
	}
	return out, errors.Join(errs...)
}
