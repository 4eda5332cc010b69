package registry

// The original client's signed-in calls: auth (login, me, the RFC 8628 device flow),
// publishers, submissions and posted reviews, with its paths, JSON names and Go types.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// WithToken sets the bearer token (a session token) for signed-in calls.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithAPIKey sets an API key (X-API-Key), which wins over a token.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

func (c *Client) setAuthHeader(req *http.Request) {
	if c.apiKey != "" {
		req.Header.Set("X-API-Key", c.apiKey)
	} else if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

type LoginResponse struct {
	Token   string `json:"token"`
	UserID  uint   `json:"user_id"`
	Success bool   `json:"success"`
}

type User struct {
	ID            uint       `json:"id"`
	Username      string     `json:"username"`
	Email         string     `json:"email"`
	FirstName     string     `json:"first_name"`
	LastName      string     `json:"last_name"`
	Avatar        string     `json:"avatar"`
	Role          string     `json:"role"`
	EmailVerified bool       `json:"email_verified"`
	CreatedAt     time.Time  `json:"created_at"`
	LastLogin     *time.Time `json:"last_login"`
}

type DeviceAuthInitiateResponse struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	ExpiresIn       int    `json:"expires_in"`
	Interval        int    `json:"interval"`
}

type DeviceAuthTokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

// DeviceAuthError is an RFC 8628 error answer (a bare {error, error_description}).
type DeviceAuthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *DeviceAuthError) Error() string {
	return fmt.Sprintf("device auth error: %s — %s", e.Code, e.Description)
}

type Publisher struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Slug        string    `json:"slug"`
	Description string    `json:"description"`
	Website     string    `json:"website"`
	Logo        string    `json:"logo"`
	Verified    bool      `json:"verified"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

type PublisherAccess struct {
	PublisherID      string `json:"publisher_id"`
	Slug             string `json:"slug"`
	Member           bool   `json:"member"`
	Role             string `json:"role"`
	CanPublish       bool   `json:"can_publish"`
	CanManagePlugins bool   `json:"can_manage_plugins"`
	CanManageMembers bool   `json:"can_manage_members"`
}

type Submission struct {
	ID                  string     `json:"id"`
	PublisherID         string     `json:"publisher_id"`
	PluginID            string     `json:"plugin_id"`
	Version             string     `json:"version"`
	Status              string     `json:"status"`
	ArtifactS3Prefix    string     `json:"artifact_s3_prefix"`
	Metadata            string     `json:"metadata_json"`
	ValidationResult    string     `json:"validation_result"`
	SubmittedByID       uint       `json:"submitted_by_id"`
	ReviewerID          *uint      `json:"reviewer_id"`
	ReviewerNotes       string     `json:"reviewer_notes"`
	Changelog           string     `json:"changelog"`
	SubmittedAt         *time.Time `json:"submitted_at"`
	ValidationStartedAt *time.Time `json:"validation_started_at"`
	ReviewedAt          *time.Time `json:"reviewed_at"`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           time.Time  `json:"updated_at"`
}

type CreateSubmissionRequest struct {
	PluginID  string `json:"plugin_id"`
	Version   string `json:"version"`
	Changelog string `json:"changelog"`
}

type UploadURLRequest struct {
	Architectures []string `json:"architectures"`
}

type UploadURLResponse struct {
	URLs map[string]string `json:"urls"`
}

type CreateReviewInput struct {
	Rating int    `json:"rating"`
	Title  string `json:"title"`
	Body   string `json:"body"`
}

func (c *Client) Login(ctx context.Context, email, password string) (*LoginResponse, error) {
	var r LoginResponse
	_, err := c.call(ctx, http.MethodPost, "/v1/auth/login", map[string]string{"email": email, "password": password}, &r)
	return &r, err
}

func (c *Client) GetMe(ctx context.Context) (*User, error) {
	var u User
	_, err := c.call(ctx, http.MethodGet, "/v1/auth/me", nil, &u)
	return &u, err
}

func (c *Client) DeviceAuthorize(ctx context.Context) (*DeviceAuthInitiateResponse, error) {
	var r DeviceAuthInitiateResponse
	_, err := c.call(ctx, http.MethodPost, "/v1/auth/device/authorize", nil, &r)
	return &r, err
}

// DeviceToken polls once: a token, a *DeviceAuthError (authorization_pending, ...) or an error.
func (c *Client) DeviceToken(ctx context.Context, deviceCode string) (*DeviceAuthTokenResponse, error) {
	raw, _ := json.Marshal(map[string]string{
		"device_code": deviceCode,
		"grant_type":  "urn:ietf:params:oauth:grant-type:device_code",
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+"/v1/auth/device/token", bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("executing request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 {
		var de DeviceAuthError
		if json.Unmarshal(body, &de) == nil && de.Code != "" {
			return nil, &de
		}
		return nil, &APIError{StatusCode: resp.StatusCode, Message: string(body)}
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("decoding response: %w", err)
	}
	if !env.Success {
		return nil, &APIError{StatusCode: resp.StatusCode, Message: env.Message}
	}
	var t DeviceAuthTokenResponse
	if err := json.Unmarshal(env.Data, &t); err != nil {
		return nil, fmt.Errorf("decoding token response: %w", err)
	}
	return &t, nil
}

func (c *Client) GetPublisher(ctx context.Context, slug string) (*Publisher, error) {
	var p Publisher
	_, err := c.call(ctx, http.MethodGet, "/v1/publishers/"+slug, nil, &p)
	return &p, err
}

func (c *Client) CheckPublisherAccess(ctx context.Context, slug string) (*PublisherAccess, error) {
	var a PublisherAccess
	_, err := c.call(ctx, http.MethodGet, "/v1/publishers/"+slug+"/can-i", nil, &a)
	return &a, err
}

func (c *Client) ListPublisherPlugins(ctx context.Context, slug string, opts *ListOptions) (ListResult[Plugin], error) {
	return list[Plugin](ctx, c, "/v1/publishers/"+slug+"/plugins"+opts.query())
}

func (c *Client) CreateSubmission(ctx context.Context, slug string, r *CreateSubmissionRequest) (*Submission, error) {
	var s Submission
	_, err := c.call(ctx, http.MethodPost, "/v1/publishers/"+slug+"/submissions", r, &s)
	return &s, err
}

func (c *Client) GetSubmission(ctx context.Context, id string) (*Submission, error) {
	var s Submission
	_, err := c.call(ctx, http.MethodGet, "/v1/submissions/"+id, nil, &s)
	return &s, err
}

func (c *Client) ListSubmissions(ctx context.Context, slug string, opts *ListOptions) (ListResult[Submission], error) {
	return list[Submission](ctx, c, "/v1/publishers/"+slug+"/submissions"+opts.query())
}

func (c *Client) SubmitForReview(ctx context.Context, id string) (*Submission, error) {
	var s Submission
	_, err := c.call(ctx, http.MethodPost, "/v1/submissions/"+id+"/submit", nil, &s)
	return &s, err
}

func (c *Client) WithdrawSubmission(ctx context.Context, id string) (*Submission, error) {
	var s Submission
	_, err := c.call(ctx, http.MethodPost, "/v1/submissions/"+id+"/withdraw", nil, &s)
	return &s, err
}

func (c *Client) GenerateUploadURLs(ctx context.Context, id string, architectures []string) (*UploadURLResponse, error) {
	var r UploadURLResponse
	_, err := c.call(ctx, http.MethodPost, "/v1/submissions/"+id+"/upload-urls", &UploadURLRequest{Architectures: architectures}, &r)
	return &r, err
}

func (c *Client) CreateReview(ctx context.Context, pluginID string, input *CreateReviewInput) (*Review, error) {
	var r Review
	_, err := c.call(ctx, http.MethodPost, "/v1/plugins/"+pluginID+"/reviews", input, &r)
	return &r, err
}
