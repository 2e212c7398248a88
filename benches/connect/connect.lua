-- A new connection per event, as edxapp opens one per web request: each event closes the thread's connection,
-- connects and logs in again, and runs `SELECT 1`. sysbench 1.0 has no option to reconnect per event, hence
-- this script (run by `cargo bench --bench connect`, with the usual --db-driver=mysql and --mysql-* options).

function thread_init()
   drv = sysbench.sql.driver()
   con = drv:connect()
end

function event()
   con:disconnect()
   con = drv:connect()
   con:query("SELECT 1")
end

function thread_done()
   con:disconnect()
end
