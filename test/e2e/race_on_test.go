//go:build race

package e2e

// raceEnabled: the tests run under -race, so idcfs is built with it too.
const raceEnabled = true
