// pgjdbc (the JDBC driver DBeaver, DataGrip and JVM applications use)
// through rdsproxy connect: run by e2e's TestDrivers as a single-file
// program with the JDBC URL connect printed. Prints "ok NAME" for each check
// that passed; the first failure throws, so the program exits non-zero with
// the stack trace.

import java.io.ByteArrayInputStream;
import java.lang.reflect.Field;
import java.io.ByteArrayOutputStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Arrays;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLSocket;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.core.BaseConnection;
import org.postgresql.core.PGStream;
import org.postgresql.core.QueryExecutorBase;

public class PgjdbcCheck {
    // A result the backend streams for hours at about 20 MB/s at most (a
    // millisecond's sleep every 100 rows), so a cancel always lands in it.
    static final String STREAM = "SELECT a, b, repeat('x', 200) FROM generate_series(1, 1000000) a, "
            + "generate_series(1, 1000) b WHERE (a + b) % 100 <> 0 OR pg_sleep(0.001) IS NULL";

    static final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r);
        t.setDaemon(true);
        return t;
    });

    public static void main(String[] args) throws Exception {
        String url = args[0], wantUser = args[1];
        try (Connection conn = DriverManager.getConnection(url)) {
            check(conn, url, wantUser);
        }
    }

    static void ok(String name) {
        System.out.println("ok " + name);
        System.out.flush();
    }

    static void require(boolean cond, String what) {
        if (!cond) {
            throw new AssertionError(what);
        }
    }

    static void usable(Connection conn) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 41 + 1")) {
            require(rs.next() && rs.getInt(1) == 42, "SELECT 41 + 1");
        }
    }

    static void check(Connection conn, String url, String wantUser) throws Exception {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT current_user")) {
            require(rs.next() && rs.getString(1).equals(wantUser), "current_user");
        }
        require(usesTLS(conn) == url.contains("sslmode=verify-full"), "TLS in use: " + usesTLS(conn) + " for " + url);
        ok("connect");

        byte[] payload = new byte[65536];
        for (int i = 0; i < payload.length; i++) {
            payload[i] = (byte) i;
        }
        // prepareThreshold 5 (the default): from the fifth run on, a named
        // server-side statement.
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int8, ?::text, ?::bytea, ?::text, ?::numeric, ?::int * 2")) {
            for (int i = 0; i < 10; i++) {
                ps.setLong(1, 1L << 62);
                ps.setString(2, "grüße ✓");
                ps.setBytes(3, payload);
                ps.setNull(4, java.sql.Types.VARCHAR);
                ps.setBigDecimal(5, new BigDecimal("12345.678901234567890"));
                ps.setInt(6, i);
                try (ResultSet rs = ps.executeQuery()) {
                    require(rs.next(), "a row");
                    require(rs.getLong(1) == 1L << 62 && rs.getString(2).equals("grüße ✓"), "int8, text");
                    require(Arrays.equals(rs.getBytes(3), payload) && rs.getString(4) == null, "bytea, null");
                    require(rs.getBigDecimal(5).equals(new BigDecimal("12345.678901234567890")), "numeric");
                    require(rs.getInt(6) == i * 2, "prepared statement run " + i);
                }
            }
        }
        ok("types");

        long want;
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT sum(length(md5(i::text))) FROM generate_series(1, 200000) i")) {
            rs.next();
            want = rs.getLong(1);
        }
        conn.setAutoCommit(false); // a fetch size streams through a portal only inside a transaction
        try (Statement st = conn.createStatement()) {
            st.setFetchSize(1000);
            long n = 0, sum = 0;
            try (ResultSet rs = st.executeQuery("SELECT i, md5(i::text) FROM generate_series(1, 200000) i")) {
                while (rs.next()) {
                    n++;
                    sum += rs.getString(2).length();
                }
            }
            require(n == 200000 && sum == want, "rows " + n + ", md5 length sum " + sum + " want " + want);
        }
        conn.commit();
        conn.setAutoCommit(true);
        ok("large-result");

        CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TEMP TABLE t (i int PRIMARY KEY, s text)");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            long copied = copy.copyOut("COPY (SELECT i, md5(i::text) FROM generate_series(1, 100000) i) TO STDOUT", out);
            require(copied == 100000, "COPY out rows " + copied);
            long in = copy.copyIn("COPY t FROM STDIN", new ByteArrayInputStream(out.toByteArray()));
            require(in == 100000, "COPY in rows " + in);
            try (ResultSet rs = st.executeQuery("SELECT count(*), bool_and(s = md5(i::text)) FROM t")) {
                require(rs.next() && rs.getLong(1) == 100000 && rs.getBoolean(2), "copied rows intact");
            }
        }
        ok("copy");

        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT 1/0");
            throw new AssertionError("1/0 did not fail");
        } catch (SQLException e) {
            require("22012".equals(e.getSQLState()), "1/0: " + e.getSQLState());
        }
        usable(conn);
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.execute("INSERT INTO t VALUES (0, 'rolled back')");
            st.execute("INSERT INTO t VALUES (0, 'duplicate')");
            throw new AssertionError("duplicate key accepted");
        } catch (SQLException e) {
            require("23505".equals(e.getSQLState()), "duplicate: " + e.getSQLState());
        }
        conn.rollback();
        conn.setAutoCommit(true);
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM t WHERE i = 0")) {
            require(rs.next() && rs.getLong(1) == 0, "rolled back row visible");
        }
        ok("errors");

        try (Statement st = conn.createStatement()) {
            st.setQueryTimeout(1);
            st.executeQuery("SELECT pg_sleep(30)");
            throw new AssertionError("query timeout did not cancel");
        } catch (SQLException e) {
            require("57014".equals(e.getSQLState()), "query timeout: " + e.getSQLState() + " " + e);
        }
        usable(conn);
        cancelled(conn, false);
        cancelled(conn, true);
        ok("cancel");

        try (Cancelling c = new Cancelling(conn)) {
            copy.copyOut("COPY (" + STREAM + ") TO STDOUT", java.io.OutputStream.nullOutputStream());
            throw new AssertionError("COPY out not cancelled");
        } catch (SQLException e) {
            require("57014".equals(e.getSQLState()), "COPY out cancel: " + e.getSQLState() + " " + e);
        }
        usable(conn);
        ok("cancel-copy");

        try (Connection listener = DriverManager.getConnection(url);
             Statement ls = listener.createStatement(); Statement st = conn.createStatement()) {
            ls.execute("LISTEN driver_check");
            st.execute("NOTIFY driver_check, 'hello'");
            PGNotification[] got = listener.unwrap(PGConnection.class).getNotifications(30000);
            require(got != null && got.length == 1 && got[0].getParameter().equals("hello"), "notification");
        }
        ok("notify");
    }

    // usesTLS reports whether the driver's socket is TLS. pgjdbc has no API
    // for it: the socket is its query executor's protected stream's.
    static boolean usesTLS(Connection conn) throws Exception {
        Object executor = conn.unwrap(BaseConnection.class).getQueryExecutor();
        Field stream = QueryExecutorBase.class.getDeclaredField("pgStream");
        stream.setAccessible(true);
        return ((PGStream) stream.get(executor)).getSocket() instanceof SSLSocket;
    }

    // cancelled runs STREAM and cancels it from another thread: with
    // autocommit, read whole before executeQuery returns;
    // without, through a portal 1,000 rows at a time (PortalSuspended
    // between them).
    static void cancelled(Connection conn, boolean portal) throws SQLException {
        conn.setAutoCommit(!portal);
        try (Statement st = conn.createStatement(); Cancelling c = new Cancelling(conn)) {
            st.setFetchSize(1000);
            try (ResultSet rs = st.executeQuery(STREAM)) {
                while (rs.next()) {
                    // read on until the cancel's error
                }
            }
            throw new AssertionError("not cancelled (portal " + portal + ")");
        } catch (SQLException e) {
            require("57014".equals(e.getSQLState()), "cancel (portal " + portal + "): " + e.getSQLState() + " " + e);
        }
        if (portal) {
            conn.rollback();
        }
        conn.setAutoCommit(true);
        usable(conn);
    }

    // Cancelling sends the connection's CancelRequest every second from
    // another thread until closed. Statement.cancel would send nothing once
    // executeQuery has returned, and a cancel that reaches the backend while
    // it waits for a portal's next Execute is ignored, so one is not enough.
    static final class Cancelling implements AutoCloseable {
        private final ScheduledFuture<?> task;
        private boolean closed; // guarded by this: no cancel is sent once close returns

        Cancelling(Connection conn) throws SQLException {
            PGConnection pg = conn.unwrap(PGConnection.class);
            task = timer.scheduleAtFixedRate(() -> {
                synchronized (this) {
                    try {
                        if (!closed) {
                            pg.cancelQuery();
                        }
                    } catch (SQLException e) {
                        System.err.println("cancel: " + e);
                    }
                }
            }, 1, 1, TimeUnit.SECONDS);
        }

        @Override
        public synchronized void close() {
            closed = true;
            task.cancel(false);
        }
    }
}
