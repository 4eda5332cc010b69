package main

// runService drives every signed-in call of the client, as a publisher's member would:
// Login, GetMe, the device flow (approved with a plain POST, as the signed-in browser
// page does), Health, GetPublisher, CheckPublisherAccess, ListPublisherPlugins,
// CreateSubmission, GenerateUploadURLs (then a PUT of the package to the URL),
// SubmitForReview, GetSubmission, ListSubmissions, WithdrawSubmission (a second
// submission), CreateReview, ListReviews and RecordDownload. It prints one JSON object.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	registry "plughost.test/goregistry/registry"
)

func runService(baseURL, email, password, slug, pluginID, version, pkg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	results := map[string]any{}
	anon := registry.NewClient(registry.WithBaseURL(baseURL))

	login, err := anon.Login(ctx, email, password)
	if err != nil {
		return fmt.Errorf("Login: %w", err)
	}
	if !login.Success || login.Token == "" {
		return fmt.Errorf("Login: no token in %+v", login)
	}
	c := registry.NewClient(registry.WithBaseURL(baseURL), registry.WithToken(login.Token))
	me, err := c.GetMe(ctx)
	if err != nil {
		return fmt.Errorf("GetMe: %w", err)
	}
	if me.ID != login.UserID {
		return fmt.Errorf("GetMe: user %d, login said %d", me.ID, login.UserID)
	}
	results["me"] = me

	// Device flow: pending, approved by the signed-in "browser", then a token.
	start, err := anon.DeviceAuthorize(ctx)
	if err != nil {
		return fmt.Errorf("DeviceAuthorize: %w", err)
	}
	_, err = anon.DeviceToken(ctx, start.DeviceCode)
	var pending *registry.DeviceAuthError
	if !errors.As(err, &pending) || pending.Code != "authorization_pending" {
		return fmt.Errorf("DeviceToken before approval: want authorization_pending, got %v", err)
	}
	if err := approve(ctx, baseURL, login.Token, start.UserCode); err != nil {
		return fmt.Errorf("approving the device code: %w", err)
	}
	device, err := anon.DeviceToken(ctx, start.DeviceCode)
	if err != nil {
		return fmt.Errorf("DeviceToken: %w", err)
	}
	deviceMe, err := registry.NewClient(registry.WithBaseURL(baseURL), registry.WithToken(device.AccessToken)).GetMe(ctx)
	if err != nil || deviceMe.ID != me.ID {
		return fmt.Errorf("GetMe with the device token: %v", err)
	}
	results["device"] = map[string]any{"user_code": start.UserCode, "token_type": device.TokenType, "interval": start.Interval}

	health, err := c.Health(ctx)
	if err != nil {
		return fmt.Errorf("Health: %w", err)
	}
	results["health"] = health
	pub, err := c.GetPublisher(ctx, slug)
	if err != nil {
		return fmt.Errorf("GetPublisher: %w", err)
	}
	results["publisher"] = pub
	access, err := c.CheckPublisherAccess(ctx, slug)
	if err != nil {
		return fmt.Errorf("CheckPublisherAccess: %w", err)
	}
	results["access"] = access

	sub, err := c.CreateSubmission(ctx, slug, &registry.CreateSubmissionRequest{PluginID: pluginID, Version: version, Changelog: "from Go"})
	if err != nil {
		return fmt.Errorf("CreateSubmission: %w", err)
	}
	arch := registry.CurrentPlatform()
	urls, err := c.GenerateUploadURLs(ctx, sub.ID, []string{arch})
	if err != nil {
		return fmt.Errorf("GenerateUploadURLs: %w", err)
	}
	data, err := os.ReadFile(pkg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, urls.URLs[arch], bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("upload URL %q: %w", urls.URLs[arch], err)
	}
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("uploading: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("uploading: status %d", resp.StatusCode)
	}
	submitted, err := c.SubmitForReview(ctx, sub.ID)
	if err != nil {
		return fmt.Errorf("SubmitForReview: %w", err)
	}
	got, err := c.GetSubmission(ctx, sub.ID)
	if err != nil {
		return fmt.Errorf("GetSubmission: %w", err)
	}
	results["submission"] = got
	results["submitted_status"] = submitted.Status

	other, err := c.CreateSubmission(ctx, slug, &registry.CreateSubmissionRequest{PluginID: pluginID, Version: version + "-withdrawn"})
	if err != nil {
		return fmt.Errorf("CreateSubmission (to withdraw): %w", err)
	}
	withdrawn, err := c.WithdrawSubmission(ctx, other.ID)
	if err != nil {
		return fmt.Errorf("WithdrawSubmission: %w", err)
	}
	results["withdrawn_status"] = withdrawn.Status
	subs, err := c.ListSubmissions(ctx, slug, &registry.ListOptions{Page: 1, PerPage: 50})
	if err != nil {
		return fmt.Errorf("ListSubmissions: %w", err)
	}
	results["submissions"] = subs

	plugins, err := c.ListPublisherPlugins(ctx, slug, &registry.ListOptions{Page: 1, PerPage: 50})
	if err != nil {
		return fmt.Errorf("ListPublisherPlugins: %w", err)
	}
	results["publisher_plugins"] = plugins
	if len(plugins.Items) > 0 {
		reviewed := plugins.Items[0].ID
		review, err := c.CreateReview(ctx, reviewed, &registry.CreateReviewInput{Rating: 4, Title: "from Go", Body: "works"})
		if err != nil {
			return fmt.Errorf("CreateReview: %w", err)
		}
		results["review"] = review
		reviews, err := c.ListReviews(ctx, reviewed, &registry.ListOptions{Page: 1, PerPage: 10})
		if err != nil {
			return fmt.Errorf("ListReviews: %w", err)
		}
		results["reviews"] = reviews
		latest := plugins.Items[0].LatestVersion
		if err := c.RecordDownload(ctx, reviewed, latest, "any"); err != nil {
			return fmt.Errorf("RecordDownload: %w", err)
		}
		stats, err := c.GetDownloadStats(ctx, reviewed)
		if err != nil {
			return fmt.Errorf("GetDownloadStats: %w", err)
		}
		results["download_stats"] = stats
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

// approve does what the signed-in browser page does with the code the command line shows.
func approve(ctx context.Context, baseURL, token, userCode string) error {
	body, _ := json.Marshal(map[string]any{"user_code": userCode, "approve": true})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/auth/device/approve", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
