// Command omnipanic is an Omniview SDK plugin that never gets to Serve.
//
// By default its PluginOpts.ID ("omnipanic-misnamed") is not the id it is
// installed under ("omnipanic"), a plain authoring mistake: sdk.NewPlugin
// looks for $HOME/.omniview/plugins/omnipanic-misnamed/plugin.yaml and
// panics with the SDK's own message, "plugin.yaml not found".
//
// With OMNIPANIC=explicit it loads its own plugin.yaml (NewPlugin succeeds)
// and then panics itself: "omnipanic: exploding before Serve".
//
// Either way the Go runtime prints "panic: <message>" and the goroutine trace
// on stderr, prints nothing on stdout and exits with code 2.
package main

import (
	"os"

	"github.com/omniviewdev/plugin-sdk/pkg/sdk"
)

func main() {
	if os.Getenv("OMNIPANIC") == "explicit" {
		p := sdk.NewPlugin(sdk.PluginOpts{ID: "omnipanic"})
		_ = p
		panic("omnipanic: exploding before Serve")
	}
	sdk.NewPlugin(sdk.PluginOpts{ID: "omnipanic-misnamed"}).Serve()
}
