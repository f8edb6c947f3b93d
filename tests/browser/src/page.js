// Page bundle entry: exposes window.runCase(client, caseName, gatewayUrl, params) → JSON result.
import { runCase, CASES } from "./cases.js";
import { CLIENTS } from "./clients.js";

window.runCase = runCase;
window.PORTICO_CASES = CASES;
window.PORTICO_CLIENTS = CLIENTS;
window.porticoReady = true;
