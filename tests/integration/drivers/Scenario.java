// pgjdbc with its defaults (prepareThreshold = 5, server-side prepared
// statements from the fifth execution) plus reWriteBatchedInserts=true:
// parameters of the common types, a PreparedStatement run 12 times, an error
// inside a transaction and rollback, CopyManager in and out, a batch.
// Run: java -cp /usr/share/java/postgresql.jar Scenario.java HOST PORT USER PASSWORD DB CHECK [URLPARAMS]
import java.io.StringReader;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.sql.*;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class Scenario {
    static String json(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean || v instanceof Integer || v instanceof Long) return v.toString();
        if (v instanceof byte[]) {
            StringBuilder sb = new StringBuilder("\\x");
            for (byte b : (byte[]) v) sb.append(String.format("%02x", b & 0xff));
            return json(sb.toString());
        }
        if (v instanceof List) {
            StringBuilder sb = new StringBuilder("[");
            for (Object o : (List<?>) v) { if (sb.length() > 1) sb.append(", "); sb.append(json(o)); }
            return sb.append("]").toString();
        }
        if (v instanceof int[]) {
            List<Object> l = new ArrayList<>();
            for (int x : (int[]) v) l.add(x);
            return json(l);
        }
        String s = (v instanceof String) ? (String) v : v.getClass().getSimpleName() + ":" + v;
        StringBuilder sb = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') sb.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) sb.append(String.format("\\u%04x", (int) c));
            else sb.append(c);
        }
        return sb.append("\"").toString();
    }

    static void out(String label, Object v) {
        System.out.println("[" + json(label) + ", " + json(v) + "]");
        System.out.flush();
    }

    static List<Object> row(ResultSet rs) throws SQLException {
        List<Object> l = new ArrayList<>();
        int n = rs.getMetaData().getColumnCount();
        for (int i = 1; i <= n; i++) l.add(rs.getObject(i));
        return l;
    }

    static List<Object> one(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return row(rs);
        }
    }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[4]
                + "?sslmode=disable&reWriteBatchedInserts=true"
                + (a.length > 6 && !a[6].isEmpty() ? "&" + a[6] : "");
        boolean check = a.length > 5 && a[5].equals("1");
        try (Connection c = DriverManager.getConnection(url, a[2], a[3])) {
            out("connect", one(c, "select current_database(), current_user"));
            try (PreparedStatement ps = c.prepareStatement(
                    "select ?::int, ?::text, ?::text, ?::bytea, ?::numeric, ?::timestamp, "
                    + "?::timestamptz, ?::bool, ?::float8")) {
                ps.setInt(1, 42);
                ps.setString(2, "h\u00e9llo, 'w\u00f6rld'");
                ps.setNull(3, Types.VARCHAR);
                ps.setBytes(4, new byte[] {0, 1, 2, 127, (byte) 128, (byte) 255});
                ps.setBigDecimal(5, new BigDecimal("12345678901234567890.0123456789"));
                ps.setObject(6, LocalDateTime.of(2024, 2, 29, 12, 34, 56, 789012000));
                ps.setObject(7, OffsetDateTime.of(2024, 2, 29, 12, 34, 56, 789012000, ZoneOffset.UTC));
                ps.setBoolean(8, true);
                ps.setDouble(9, 1.5);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    List<Object> r = row(rs);
                    r.set(5, rs.getObject(6, LocalDateTime.class).toString());
                    r.set(6, rs.getObject(7, OffsetDateTime.class).toString());
                    out("params", r);
                }
            }
            try (Statement st = c.createStatement()) {
                st.execute("drop table if exists pgjdbc_t");
                st.execute("create table pgjdbc_t (id int primary key, name text, data bytea, amount numeric)");
            }
            // A PreparedStatement used 12 times: server-prepared from the 5th.
            try (PreparedStatement ins = c.prepareStatement("insert into pgjdbc_t values (?, ?, ?, ?)");
                 PreparedStatement sel = c.prepareStatement(
                         "select ?::int * 2, ?::text || '!', (select name from pgjdbc_t where id = ?)")) {
                for (int i = 0; i < 12; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "row " + i);
                    ins.setBytes(3, new byte[] {(byte) i, (byte) (255 - i)});
                    ins.setBigDecimal(4, new BigDecimal("1.5").add(BigDecimal.valueOf(i)));
                    out("insert-" + i, ins.executeUpdate());
                    sel.setInt(1, i);
                    sel.setString(2, "v" + i);
                    sel.setInt(3, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        rs.next();
                        out("prepared-" + i, row(rs));
                    }
                }
                if (check) {
                    List<Object> r = one(c, "select count(*) from pg_prepared_statements where name like 'S\\_%'");
                    if (((Long) r.get(0)) < 2) throw new AssertionError("pgjdbc did not prepare: " + r);
                }
                // An error inside a transaction, rollback, a good query.
                c.setAutoCommit(false);
                try (Statement st = c.createStatement()) {
                    st.executeUpdate("insert into pgjdbc_t values (100, 'doomed', null, null)");
                    try {
                        st.executeQuery("select 1 / 0");
                        out("error", "none");
                    } catch (SQLException e) {
                        out("error", List.of(e.getSQLState()));
                    }
                    try {
                        sel.setInt(1, 1); sel.setString(2, "x"); sel.setInt(3, 1);
                        sel.executeQuery();
                        out("in-failed-tx", "none");
                    } catch (SQLException e) {
                        out("in-failed-tx", e.getSQLState());
                    }
                }
                c.rollback();
                out("after-rollback", one(c, "select count(*), max(id) from pgjdbc_t"));
                c.commit();
                for (int i = 0; i < 10; i++) {
                    sel.setInt(1, i); sel.setString(2, "again" + i); sel.setInt(3, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        rs.next();
                        out("in-tx-" + i, row(rs));
                    }
                }
                c.commit();
                c.setAutoCommit(true);
                for (int i = 0; i < 10; i++) {
                    sel.setInt(1, i); sel.setString(2, "auto" + i); sel.setInt(3, i);
                    try (ResultSet rs = sel.executeQuery()) {
                        rs.next();
                        out("autocommit-" + i, row(rs));
                    }
                }
            }
            // COPY in and out.
            try (Statement st = c.createStatement()) {
                st.execute("drop table if exists pgjdbc_copy");
                st.execute("create table pgjdbc_copy (id int, name text, at timestamp)");
            }
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder data = new StringBuilder();
            for (int i = 0; i < 150; i++)
                data.append(i).append(",\"n").append(i).append(", q\"\"\",2024-01-01 10:00:").append(String.format("%02d", i % 60)).append("\n");
            out("copy-in", cm.copyIn("copy pgjdbc_copy from stdin (format csv)", new StringReader(data.toString())));
            StringWriter w = new StringWriter();
            out("copy-out-rows", cm.copyOut("copy (select * from pgjdbc_copy where id % 30 = 0 order by id) to stdout (format csv)", w));
            out("copy-out", w.toString());
            // A batch: rewritten into multi-row inserts.
            try (PreparedStatement b = c.prepareStatement("insert into pgjdbc_copy (id, name) values (?, ?)")) {
                for (int i = 0; i < 100; i++) {
                    b.setInt(1, 1000 + i);
                    b.setString(2, "batch" + i);
                    b.addBatch();
                }
                int[] counts = b.executeBatch();
                long total = 0;
                for (int n : counts) total += (n == Statement.SUCCESS_NO_INFO ? 1 : n);
                out("batch", List.of(counts.length > 0, total));
            }
            // The same batch again (its statements are prepared by now), in a transaction.
            c.setAutoCommit(false);
            for (int round = 0; round < 6; round++) {
                try (PreparedStatement b = c.prepareStatement("insert into pgjdbc_copy (id, name) values (?, ?)")) {
                    for (int i = 0; i < 10; i++) {
                        b.setInt(1, 2000 + round * 10 + i);
                        b.setString(2, "r" + round);
                        b.addBatch();
                    }
                    b.executeBatch();
                }
            }
            c.commit();
            c.setAutoCommit(true);
            out("batch-count", one(c, "select count(*), sum(id) from pgjdbc_copy"));
            try (Statement st = c.createStatement()) {
                st.addBatch("insert into pgjdbc_copy (id) values (9000)");
                st.addBatch("insert into pgjdbc_copy (id) values ('x')");
                st.addBatch("insert into pgjdbc_copy (id) values (9001)");
                st.executeBatch();
                out("batch-error", "none");
            } catch (BatchUpdateException e) {
                out("batch-error", e.getSQLState());
            }
            out("after-batch-error", one(c, "select count(*) from pgjdbc_copy where id >= 9000"));
        }
        out("done", true);
    }
}
