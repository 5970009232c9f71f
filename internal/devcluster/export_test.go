package devcluster

// StartLedgerdPicking is StartLedgerd with the choice of the address to
// listen on, so that a test can hand it a taken one.
var StartLedgerdPicking = startLedgerd
