// Command goregistry drives a marketplace with the Omniview registry client's
// API, to show that plughost's registry server is wire-compatible with it.
//
//	goregistry -url http://127.0.0.1:PORT -pubkey HEX -plugin ID -version V -out FILE
//	goregistry -service -url URL -email E -password P -publisher SLUG -plugin ID -version V -package FILE
//
// It calls Health, ListPlugins (every page), GetPlugin, ListVersions,
// GetVersion, ListCategories, ListReviews, RecordDownload, GetDownloadStats,
// GetDailyDownloads and DownloadPlugin (checksum and signature verified with
// -pubkey), prints one JSON object with every result on stdout, copies the
// downloaded package to -out, and exits 1 with a message on the first error.
//
// The client package is ./registry (see its doc: the original module is not
// served by the Go module proxy); its API is the original's, so pointing the
// import at github.com/omniviewdev/registry is all it takes to use the original.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	registry "plughost.test/goregistry/registry"
)

func main() {
	baseURL := flag.String("url", "", "marketplace base URL (without /v1)")
	pubkey := flag.String("pubkey", "", "registry public key, 64 hex characters")
	pluginID := flag.String("plugin", "", "plugin id to inspect and download")
	version := flag.String("version", "", "version to download")
	out := flag.String("out", "", "where to write the downloaded package")
	service := flag.Bool("service", false, "drive the signed-in calls instead (see service.go)")
	email := flag.String("email", "", "-service: the user to sign in as (a member of -publisher)")
	password := flag.String("password", "", "-service: that user's password")
	publisher := flag.String("publisher", "", "-service: the publisher's slug")
	pkg := flag.String("package", "", "-service: the package of -plugin -version to submit")
	flag.Parse()
	if *service {
		if err := runService(*baseURL, *email, *password, *publisher, *pluginID, *version, *pkg); err != nil {
			fmt.Fprintln(os.Stderr, "goregistry:", err)
			os.Exit(1)
		}
		return
	}
	if *baseURL == "" || *pubkey == "" || *pluginID == "" || *version == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: goregistry -url URL -pubkey HEX -plugin ID -version V -out FILE")
		os.Exit(2)
	}
	if err := run(*baseURL, *pubkey, *pluginID, *version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "goregistry:", err)
		os.Exit(1)
	}
}

func run(baseURL, pubkey, pluginID, version, out string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := registry.SetPublicKey(pubkey); err != nil {
		return fmt.Errorf("SetPublicKey: %w", err)
	}
	c := registry.NewClient(registry.WithBaseURL(baseURL))
	results := map[string]any{"platform": registry.CurrentPlatform()}

	health, err := c.Health(ctx)
	if err != nil {
		return fmt.Errorf("Health: %w", err)
	}
	results["health"] = health

	var plugins []registry.Plugin
	var pages []*registry.Pagination
	for page := 1; ; page++ {
		res, err := c.ListPlugins(ctx, &registry.ListOptions{Page: page, PerPage: 2, OrderField: "name", OrderDirection: "asc"})
		if err != nil {
			return fmt.Errorf("ListPlugins page %d: %w", page, err)
		}
		if res.Pagination == nil {
			return fmt.Errorf("ListPlugins page %d: no pagination in the answer", page)
		}
		plugins = append(plugins, res.Items...)
		pages = append(pages, res.Pagination)
		if len(res.Items) == 0 || int32(page) >= res.Pagination.TotalPages {
			break
		}
	}
	results["plugins"] = plugins
	results["plugin_pages"] = pages

	plugin, err := c.GetPlugin(ctx, pluginID)
	if err != nil {
		return fmt.Errorf("GetPlugin: %w", err)
	}
	if plugin.ID != pluginID {
		return fmt.Errorf("GetPlugin: got plugin %q, asked for %q", plugin.ID, pluginID)
	}
	results["plugin"] = plugin

	versions, err := c.ListVersions(ctx, pluginID, &registry.ListOptions{Page: 1, PerPage: 50})
	if err != nil {
		return fmt.Errorf("ListVersions: %w", err)
	}
	results["versions"] = versions

	v, err := c.GetVersion(ctx, pluginID, version)
	if err != nil {
		return fmt.Errorf("GetVersion: %w", err)
	}
	if _, ok := v.Artifacts[registry.CurrentPlatform()]; !ok {
		return fmt.Errorf("GetVersion: no artifact for %s", registry.CurrentPlatform())
	}
	results["version"] = v

	cats, err := c.ListCategories(ctx)
	if err != nil {
		return fmt.Errorf("ListCategories: %w", err)
	}
	results["categories"] = cats

	reviews, err := c.ListReviews(ctx, pluginID, &registry.ListOptions{Page: 1, PerPage: 10})
	if err != nil {
		return fmt.Errorf("ListReviews: %w", err)
	}
	results["reviews"] = reviews

	if err := c.RecordDownload(ctx, pluginID, version, registry.CurrentPlatform()); err != nil {
		return fmt.Errorf("RecordDownload: %w", err)
	}

	stats, err := c.GetDownloadStats(ctx, pluginID)
	if err != nil {
		return fmt.Errorf("GetDownloadStats: %w", err)
	}
	results["download_stats"] = stats

	daily, err := c.GetDailyDownloads(ctx, pluginID, 30)
	if err != nil {
		return fmt.Errorf("GetDailyDownloads: %w", err)
	}
	results["daily_downloads"] = daily

	location, err := c.GetDownloadURL(ctx, pluginID, version, registry.CurrentPlatform())
	if err != nil {
		return fmt.Errorf("GetDownloadURL: %w", err)
	}
	results["download_url"] = location

	tmp, err := c.DownloadPlugin(ctx, pluginID, version)
	if err != nil {
		return fmt.Errorf("DownloadPlugin: %w", err)
	}
	defer os.Remove(tmp)
	if err := copyFile(tmp, out); err != nil {
		return fmt.Errorf("copying the download to %s: %w", out, err)
	}
	results["downloaded"] = out

	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	outFile, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(outFile, in); err != nil {
		outFile.Close()
		return err
	}
	return outFile.Close()
}
