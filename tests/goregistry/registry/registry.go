// Package registry is a Go marketplace client with the API and the wire
// behaviour of the original Omniview client, github.com/omniviewdev/registry.
//
// Why it exists: the interop test must build offline and in CI, and the Go
// module proxy refuses github.com/omniviewdev/registry ("This module version
// is not available", for @latest, tagged versions and commits alike). So
// this package reproduces, in our own code and with the standard library
// only, exactly what the original client expects of a server:
//
//   - every answer is an envelope {success, data, message, pagination}; a
//     status >= 400 or success=false is an error carrying the message;
//   - data is decoded into typed structs with the original's JSON names and
//     Go types (time.Time for RFC 3339 times, uint for Review.user_id, int64
//     counts, int32 pagination), so a wrong type fails the decode;
//   - GetDownloadURL does not follow the redirect: it takes the Location of
//     a 302 or 307 as it is and fetches it with a plain GET, so the Location
//     must be absolute;
//   - DownloadPlugin picks the artifact for runtime.GOOS_runtime.GOARCH,
//     hashes while downloading, compares with the listed checksum (exact,
//     lower-case hex) and verifies the standard-base64 Ed25519 signature of
//     the hex checksum with the key given to SetPublicKey (64 hex chars).
//
// The names and signatures match the original's (NewClient(WithBaseURL(u)),
// SetPublicKey, ListPlugins(ctx, *ListOptions), ...), so main.go compiles
// against either: switching to the real module is changing one import path
// and adding it to go.mod.
package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Errors returned by downloads and verification.
var (
	ErrUnsignedArtifact   = errors.New("artifact is not signed")
	ErrInvalidSignature   = errors.New("invalid artifact signature")
	ErrNoPlatformArtifact = errors.New("no artifact available for current platform")
	ErrChecksumMismatch   = errors.New("checksum mismatch")
	ErrNoPublicKey        = errors.New("no public key set (call SetPublicKey)")
)

// APIError is an error answer of the API: its status and message.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("registry API error %d: %s", e.StatusCode, e.Message)
}

var publicKey ed25519.PublicKey

// SetPublicKey sets the Ed25519 key (64 hex characters) that signs artifacts.
func SetPublicKey(hexKey string) error {
	raw, err := hex.DecodeString(hexKey)
	if err != nil {
		return fmt.Errorf("public key is not hex: %w", err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return fmt.Errorf("public key has %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	publicKey = ed25519.PublicKey(raw)
	return nil
}

// VerifyArtifactSignature checks the base64 Ed25519 signature of a hex checksum.
func VerifyArtifactSignature(checksum, signatureB64 string) error {
	if signatureB64 == "" {
		return ErrUnsignedArtifact
	}
	if publicKey == nil {
		return ErrNoPublicKey
	}
	sig, err := base64.StdEncoding.DecodeString(signatureB64)
	if err != nil {
		return fmt.Errorf("%w: not standard base64: %v", ErrInvalidSignature, err)
	}
	if !ed25519.Verify(publicKey, []byte(checksum), sig) {
		return ErrInvalidSignature
	}
	return nil
}

// CurrentPlatform is this machine's artifact key, GOOS_GOARCH.
func CurrentPlatform() string { return runtime.GOOS + "_" + runtime.GOARCH }

// -- wire types ---------------------------------------------------------------

type Plugin struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Description   string         `json:"description"`
	IconURL       string         `json:"icon_url"`
	Category      string         `json:"category"`
	Tags          []string       `json:"tags"`
	License       string         `json:"license"`
	Repository    string         `json:"repository"`
	URL           string         `json:"url"`
	Readme        string         `json:"readme"`
	Official      bool           `json:"official"`
	Featured      bool           `json:"featured"`
	DownloadCount int64          `json:"download_count"`
	AverageRating float64        `json:"average_rating"`
	ReviewCount   int64          `json:"review_count"`
	PublisherID   string         `json:"publisher_id"`
	PublisherName string         `json:"publisher_name"`
	LatestVersion string         `json:"latest_version"`
	Version       *PluginVersion `json:"version,omitempty"`
	Author        PluginAuthor   `json:"author"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
}

type PluginAuthor struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	URL   string `json:"url"`
}

type PluginVersion struct {
	ID            string              `json:"id"`
	PluginID      string              `json:"plugin_id"`
	Version       string              `json:"version"`
	Description   string              `json:"description"`
	Changelog     string              `json:"changelog"`
	MinIDEVersion string              `json:"min_ide_version"`
	MaxIDEVersion string              `json:"max_ide_version"`
	Capabilities  []string            `json:"capabilities"`
	Visible       bool                `json:"visible"`
	Artifacts     map[string]Artifact `json:"artifacts,omitempty"`
	CreatedAt     time.Time           `json:"created_at"`
	UpdatedAt     time.Time           `json:"updated_at"`
}

type Artifact struct {
	Checksum    string `json:"checksum"`
	Signature   string `json:"signature"`
	DownloadURL string `json:"download_url"`
	Size        int64  `json:"size"`
}

type Review struct {
	ID         string     `json:"id"`
	PluginID   string     `json:"plugin_id"`
	UserID     uint       `json:"user_id"`
	Rating     int        `json:"rating"`
	Title      string     `json:"title"`
	Body       string     `json:"body"`
	Response   string     `json:"response,omitempty"`
	ResponseAt *time.Time `json:"response_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

type DownloadStats struct {
	PluginID   string             `json:"plugin_id"`
	TotalCount int64              `json:"total_count"`
	ByVersion  []VersionDownloads `json:"by_version,omitempty"`
}

type VersionDownloads struct {
	Version string `json:"version"`
	Count   int64  `json:"count"`
}

type DailyDownloads struct {
	Date  string `json:"date"`
	Count int64  `json:"count"`
}

type CategoryCount struct {
	Category string `json:"category"`
	Count    int64  `json:"count"`
}

type HealthStatus struct {
	Status string `json:"status"`
}

type Pagination struct {
	Page       int32 `json:"page"`
	PerPage    int32 `json:"per_page"`
	Total      int64 `json:"total"`
	TotalPages int32 `json:"total_pages"`
}

type ListResult[T any] struct {
	Items      []T         `json:"items"`
	Pagination *Pagination `json:"pagination,omitempty"`
}

type ListOptions struct {
	Page           int
	PerPage        int
	OrderField     string
	OrderDirection string
	Search         string
	Category       string
	Featured       bool
}

func (o *ListOptions) query() string {
	if o == nil {
		return ""
	}
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Page > 0 {
		set("page", strconv.Itoa(o.Page))
	}
	if o.PerPage > 0 {
		set("per_page", strconv.Itoa(o.PerPage))
	}
	set("order_field", o.OrderField)
	set("order_direction", o.OrderDirection)
	set("q", o.Search)
	set("category", o.Category)
	if o.Featured {
		set("featured", "true")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

type envelope struct {
	Success    bool            `json:"success"`
	Data       json.RawMessage `json:"data,omitempty"`
	Message    string          `json:"message,omitempty"`
	Pagination *Pagination     `json:"pagination,omitempty"`
}

// -- client -------------------------------------------------------------------

type Client struct {
	baseURL string
	token   string
	apiKey  string
	http    *http.Client
}

type Option func(*Client)

func WithBaseURL(u string) Option { return func(c *Client) { c.baseURL = u } }

func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

func NewClient(opts ...Option) *Client {
	c := &Client{http: &http.Client{Timeout: 30 * time.Second}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// call sends one request and decodes the envelope; data goes into dst (if not nil).
func (c *Client) call(ctx context.Context, method, path string, body any, dst any) (*Pagination, error) {
	var reader io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		reader = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, reader)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.setAuthHeader(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("executing request: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading response: %w", err)
	}
	var env envelope
	decodeErr := json.Unmarshal(raw, &env)
	if resp.StatusCode >= 400 {
		if decodeErr == nil && env.Message != "" {
			return nil, &APIError{StatusCode: resp.StatusCode, Message: env.Message}
		}
		return nil, &APIError{StatusCode: resp.StatusCode, Message: string(raw)}
	}
	if dst == nil {
		return nil, nil
	}
	if decodeErr != nil {
		return nil, fmt.Errorf("decoding response envelope: %w", decodeErr)
	}
	if !env.Success {
		return nil, &APIError{StatusCode: resp.StatusCode, Message: env.Message}
	}
	if env.Data != nil {
		if err := json.Unmarshal(env.Data, dst); err != nil {
			return nil, fmt.Errorf("decoding response data: %w", err)
		}
	}
	return env.Pagination, nil
}

func (c *Client) Health(ctx context.Context) (*HealthStatus, error) {
	var h HealthStatus
	_, err := c.call(ctx, http.MethodGet, "/v1/health", nil, &h)
	return &h, err
}

func list[T any](ctx context.Context, c *Client, path string) (ListResult[T], error) {
	var items []T
	pag, err := c.call(ctx, http.MethodGet, path, nil, &items)
	if err != nil {
		return ListResult[T]{}, err
	}
	if items == nil {
		items = []T{}
	}
	return ListResult[T]{Items: items, Pagination: pag}, nil
}

func (c *Client) ListPlugins(ctx context.Context, opts *ListOptions) (ListResult[Plugin], error) {
	return list[Plugin](ctx, c, "/v1/plugins"+opts.query())
}

func (c *Client) GetPlugin(ctx context.Context, pluginID string) (*Plugin, error) {
	var p Plugin
	if _, err := c.call(ctx, http.MethodGet, "/v1/plugins/"+pluginID, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func (c *Client) ListCategories(ctx context.Context) ([]CategoryCount, error) {
	var cats []CategoryCount
	if _, err := c.call(ctx, http.MethodGet, "/v1/categories", nil, &cats); err != nil {
		return nil, err
	}
	return cats, nil
}

func (c *Client) ListVersions(ctx context.Context, pluginID string, opts *ListOptions) (ListResult[PluginVersion], error) {
	return list[PluginVersion](ctx, c, "/v1/plugins/"+pluginID+"/versions"+opts.query())
}

func (c *Client) GetVersion(ctx context.Context, pluginID, version string) (*PluginVersion, error) {
	var v PluginVersion
	if _, err := c.call(ctx, http.MethodGet, "/v1/plugins/"+pluginID+"/versions/"+version, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

func (c *Client) ListReviews(ctx context.Context, pluginID string, opts *ListOptions) (ListResult[Review], error) {
	return list[Review](ctx, c, "/v1/plugins/"+pluginID+"/reviews"+opts.query())
}

func (c *Client) RecordDownload(ctx context.Context, pluginID, version, arch string) error {
	body := map[string]string{"plugin_id": pluginID, "version": version, "arch": arch}
	_, err := c.call(ctx, http.MethodPost, "/v1/plugins/"+pluginID+"/downloads", body, nil)
	return err
}

func (c *Client) GetDownloadStats(ctx context.Context, pluginID string) (*DownloadStats, error) {
	var ds DownloadStats
	if _, err := c.call(ctx, http.MethodGet, "/v1/plugins/"+pluginID+"/downloads", nil, &ds); err != nil {
		return nil, err
	}
	return &ds, nil
}

func (c *Client) GetDailyDownloads(ctx context.Context, pluginID string, days int) ([]DailyDownloads, error) {
	var dd []DailyDownloads
	path := "/v1/plugins/" + pluginID + "/downloads/daily?days=" + strconv.Itoa(days)
	if _, err := c.call(ctx, http.MethodGet, path, nil, &dd); err != nil {
		return nil, err
	}
	return dd, nil
}

// GetDownloadURL returns the Location of the download endpoint's redirect, unfollowed.
func (c *Client) GetDownloadURL(ctx context.Context, pluginID, version, arch string) (string, error) {
	path := fmt.Sprintf("/v1/plugins/%s/download/%s/%s", pluginID, version, arch)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL+path, nil)
	if err != nil {
		return "", err
	}
	noFollow := *c.http
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := noFollow.Do(req)
	if err != nil {
		return "", fmt.Errorf("executing request: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusFound || resp.StatusCode == http.StatusTemporaryRedirect:
		return resp.Header.Get("Location"), nil
	case resp.StatusCode >= 400:
		return "", &APIError{StatusCode: resp.StatusCode, Message: "download not available"}
	}
	return "", fmt.Errorf("unexpected status %d from download endpoint", resp.StatusCode)
}

// DownloadPlugin downloads and verifies this platform's package; returns a temp file path.
func (c *Client) DownloadPlugin(ctx context.Context, pluginID, version string) (string, error) {
	v, err := c.GetVersion(ctx, pluginID, version)
	if err != nil {
		return "", fmt.Errorf("getting version info: %w", err)
	}
	platform := CurrentPlatform()
	artifact, ok := v.Artifacts[platform]
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNoPlatformArtifact, platform)
	}
	location, err := c.GetDownloadURL(ctx, pluginID, version, platform)
	if err != nil {
		return "", fmt.Errorf("getting download URL: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, location, nil)
	if err != nil {
		return "", fmt.Errorf("creating download request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("downloading artifact: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", &APIError{StatusCode: resp.StatusCode, Message: "download failed"}
	}
	tmp, err := os.CreateTemp("", "plughost-goregistry-*.tar.gz")
	if err != nil {
		return "", err
	}
	hasher := sha256.New()
	_, copyErr := io.Copy(io.MultiWriter(tmp, hasher), resp.Body)
	closeErr := tmp.Close()
	if copyErr != nil || closeErr != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("writing artifact: %v %v", copyErr, closeErr)
	}
	checksum := hex.EncodeToString(hasher.Sum(nil))
	if checksum != artifact.Checksum {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("%w: expected %s, got %s", ErrChecksumMismatch, artifact.Checksum, checksum)
	}
	if err := VerifyArtifactSignature(checksum, artifact.Signature); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("signature verification failed: %w", err)
	}
	return tmp.Name(), nil
}
