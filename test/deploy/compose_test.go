package deploy

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeCaps are the capabilities deploy/compose.yaml adds.
func composeCaps(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			CapAdd  []string `yaml:"cap_add"`
			CapDrop []string `yaml:"cap_drop"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	s := f.Services["hbf"]
	if len(s.CapDrop) != 1 || s.CapDrop[0] != "ALL" {
		t.Errorf("compose cap_drop %v, want [ALL]", s.CapDrop)
	}
	return s.CapAdd
}
