package main

import (
	"encoding/json"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// printConfig prints, for `ledgerd config`, the configuration that
// `ledgerd serve` would run with: every setting, its value (secrets
// redacted) and its source. The text form is YAML that serve reads back
// as a configuration file, each value's source in a comment; -o json is
// for scripts.
func printConfig(cfg config, stdout io.Writer) error {
	switch cfg.Output {
	case "json":
		type jsonSetting struct {
			Key    string `json:"key"`
			Value  string `json:"value"`
			Source string `json:"source"`
			Origin string `json:"origin,omitempty"`
		}
		out := struct {
			File     string        `json:"file,omitempty"`
			Settings []jsonSetting `json:"settings"`
		}{File: cfg.Layers.File}
		for _, s := range cfg.Layers.Settings {
			out.Settings = append(out.Settings, jsonSetting{Key: s.Key, Value: redact(s.Key, s.Value), Source: s.Source.String(), Origin: s.Origin})
		}
		encoder := json.NewEncoder(stdout)
		encoder.SetIndent("", "  ")
		return encoder.Encode(out)
	case "text":
		root := &yaml.Node{Kind: yaml.MappingNode}
		root.HeadComment = "The configuration ledgerd serve runs with: defaults, then the --config file, then\n" +
			"LEDGER_ variables, then flags. Each value's source follows it; secrets are redacted."
		for _, s := range cfg.Layers.Settings {
			comment := s.Source.String()
			if s.Origin != "" {
				comment += " " + s.Origin
			}
			root.Content = append(root.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: s.Key},
				&yaml.Node{Kind: yaml.ScalarNode, Value: redact(s.Key, s.Value), Tag: s.kind.yamlTag(), LineComment: comment})
		}
		encoder := yaml.NewEncoder(stdout)
		encoder.SetIndent(2)
		if err := encoder.Encode(root); err != nil {
			return err
		}
		return encoder.Close()
	default:
		return fmt.Errorf("-o must be text or json, got %q", cfg.Output)
	}
}

// yamlTag is the YAML type a value of the kind is printed as: strings are
// quoted where YAML would read them as something else; numbers and
// booleans are left plain (no tag: a float that is a whole number would
// otherwise print as "!!float 5").
func (k valueKind) yamlTag() string {
	switch k {
	case kindBool, kindInt, kindFloat:
		return ""
	case kindString, kindDuration, kindLevel:
	}
	return "!!str"
}
