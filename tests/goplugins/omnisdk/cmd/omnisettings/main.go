// Command omnisettings is an Omniview SDK plugin that declares settings of
// every simple kind the SDK knows (text, integer, float, toggle, select and a
// sensitive password), each with a default and a description, the way
// Omniview's own plugins pass them in sdk.PluginOpts.Settings.
//
// The SDK keeps them in its settings provider under the "plugin" category and
// serves them over omniview.sdk.settings.v1.SettingsPlugin (ListSettings,
// GetSetting, GetSettingValue, SetSetting, SetSettings).
package main

import (
	"github.com/omniviewdev/plugin-sdk/pkg/sdk"
	"github.com/omniviewdev/plugin-sdk/settings"
)

func main() {
	p := sdk.NewPlugin(sdk.PluginOpts{
		ID: "omnisettings",
		Settings: []settings.Setting{
			{
				ID:          "greeting",
				Label:       "Greeting",
				Description: "The word the plugin greets with",
				Type:        settings.Text,
				Default:     "hello",
			},
			{
				ID:          "retries",
				Label:       "Retries",
				Description: "How many times a failed call is retried",
				Type:        settings.Integer,
				Default:     3,
			},
			{
				ID:          "ratio",
				Label:       "Ratio",
				Description: "A fraction between 0 and 1",
				Type:        settings.Float,
				Default:     0.5,
			},
			{
				ID:          "verbose",
				Label:       "Verbose",
				Description: "Log every call",
				Type:        settings.Toggle,
				Default:     false,
			},
			{
				ID:          "theme",
				Label:       "Theme",
				Description: "Colour scheme of the plugin's views",
				Type:        settings.Select,
				Default:     "dark",
				Options: []settings.SettingOption{
					{Label: "Dark", Description: "Light text on a dark background", Value: "dark"},
					{Label: "Light", Description: "Dark text on a light background", Value: "light"},
				},
			},
			{
				ID:          "token",
				Label:       "API token",
				Description: "Secret used to reach the backend",
				Type:        settings.Password,
				Default:     "",
				Sensitive:   true,
			},
		},
	})
	p.Serve()
}
