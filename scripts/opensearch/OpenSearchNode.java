/*
 * Starts one embedded OpenSearch 2.19 node on given loopback ports for the test suite.
 * scripts/backends.py runs this class and stops it with SIGTERM, which closes the node cleanly.
 */

import java.io.IOException;
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class OpenSearchNode {

    private static final String NODE_NAME = "node-1";

    private OpenSearchNode() {
    }

    /**
     * Starts the node, waits for a yellow cluster, then blocks until SIGTERM or SIGINT ends the JVM.
     *
     * @param args base path, HTTP port, transport port and cluster name
     * @throws InterruptedException if the main thread is interrupted while it waits
     */
    public static void main(final String[] args) throws InterruptedException {
        if (args.length != 4) {
            System.err.println("usage: OpenSearchNode BASE_PATH HTTP_PORT TRANSPORT_PORT CLUSTER_NAME");
            System.exit(2);
        }
        final String basePath = args[0];
        final int httpPort = parsePort("HTTP_PORT", args[1]);
        final int transportPort = parsePort("TRANSPORT_PORT", args[2]);
        final String clusterName = args[3];

        final OpenSearchRunner runner = new OpenSearchRunner();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> closeRunner(runner), "opensearch-node-close"));

        // The runner rejects HTTP ports above maxHttpPort (9299 by default), but the port
        // chosen by the caller is a free ephemeral port, usually far above that.
        runner.setMaxHttpPort(httpPort);
        runner.onBuild((index, settings) -> {
            settings.put("node.name", NODE_NAME);
            settings.put("network.host", "127.0.0.1");
            settings.put("http.port", String.valueOf(httpPort));
            settings.put("transport.port", String.valueOf(transportPort));
            // Naming the only node skips the 3 s wait of best-effort cluster bootstrapping.
            // discovery.type=single-node cannot be used together with this setting.
            settings.putList("cluster.initial_cluster_manager_nodes", NODE_NAME);
            // A nearly full disk must not turn indices read-only in the middle of a test run.
            settings.put("cluster.routing.allocation.disk.threshold_enabled", "false");
        });

        try {
            runner.build(OpenSearchRunner.newConfigs()
                    .basePath(basePath)
                    .numOfNode(1)
                    .baseHttpPort(httpPort - 1)
                    .clusterName(clusterName));
            runner.ensureYellow();
        } catch (final RuntimeException e) {
            System.err.println("OpenSearchNode: failed to start the node: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        System.out.println("OpenSearchNode: cluster " + clusterName + " is ready on http://127.0.0.1:" + httpPort);

        // SIGTERM and SIGINT run the shutdown hook and end the JVM, so this wait never returns.
        new CountDownLatch(1).await();
    }

    private static int parsePort(final String name, final String value) {
        try {
            final int port = Integer.parseInt(value);
            if (port < 1 || port > 65535) {
                throw new NumberFormatException("out of range");
            }
            return port;
        } catch (final NumberFormatException e) {
            System.err.println("OpenSearchNode: invalid " + name + " '" + value + "': expected a port number 1-65535");
            System.exit(2);
            return -1;
        }
    }

    private static void closeRunner(final OpenSearchRunner runner) {
        try {
            runner.close();
        } catch (final IOException e) {
            System.err.println("OpenSearchNode: failed to close the node: " + e);
        }
    }
}
