package kerneltest

import (
	"testing"

	"github.com/hbf-firewall/hbf/internal/dataplane"
	"github.com/hbf-firewall/hbf/internal/testenv"
)

func TestFakeKeepsTheContract(t *testing.T) {
	Run(t, func(*testing.T) Subject {
		return Subject{Rules: NewFake(nil).WithCapacity(50000), Capacity: 50000}
	})
}

func TestDataplaneKeepsTheContract(t *testing.T) {
	testenv.RequirePrivileged(t)
	Run(t, func(t *testing.T) Subject {
		d, err := dataplane.Load(dataplane.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return Subject{Rules: d, Capacity: ExactCapacity}
	})
}
