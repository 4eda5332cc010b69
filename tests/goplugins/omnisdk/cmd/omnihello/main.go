// Command omnihello is the smallest plugin one can write with Omniview's Go SDK
// (github.com/omniviewdev/plugin-sdk): no settings, no capability of its own.
// The SDK still serves the settings capability (always registered by NewPlugin)
// and the PluginLifecycle service (added by Serve).
package main

import "github.com/omniviewdev/plugin-sdk/pkg/sdk"

func main() {
	sdk.NewPlugin(sdk.PluginOpts{ID: "omnihello"}).Serve()
}
