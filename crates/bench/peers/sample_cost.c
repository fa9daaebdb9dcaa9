/* What one sampled breakpoint hit costs the target, by what the sample
 * carries: the measurement behind `Callchain::Copied` (docs/PERFORMANCE.md,
 * "Where a sampled hit's time goes").
 *
 *   sample_cost ADDR MODE ARG -- CMD [ARGS...]     (ADDR in hex, no 0x)
 *
 * Forks CMD, opens one write breakpoint on ADDR (8 bytes) for it with
 * enable_on_exec, maps a ring (PAGES env, default 2048 pages) drained by a
 * thread that only advances data_tail every 2 ms, runs CMD and prints its
 * wall time and CPU time. MODE:
 *   0  counting, no samples
 *   1  samples of IP, TID, TIME, ADDR, ID, CPU (what hwbreak watch records)
 *   2  1 + the kernel's user callchain (sample_max_stack 127)
 *   3  1 + the kernel's user callchain with sample_max_stack = ARG
 *   4  1 + BP, SP, IP and ARG bytes of user stack (hwbreak's default)
 *   5  1 + all 20 user registers and ARG bytes of user stack
 * Build: gcc -O2 -pthread sample_cost.c -o sample_cost
 */
#define _GNU_SOURCE
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
static volatile int done; static struct perf_event_mmap_page *mp; static unsigned long bytes;
static void*rd(void*x){while(!done){uint64_t h=__atomic_load_n(&mp->data_head,__ATOMIC_ACQUIRE); bytes+=h-mp->data_tail; __atomic_store_n(&mp->data_tail,h,__ATOMIC_RELEASE); usleep(2000);} return 0;}
static double now(void){struct timespec ts;clock_gettime(CLOCK_MONOTONIC,&ts);return ts.tv_sec+ts.tv_nsec*1e-9;}
int main(int argc,char**argv){
 if(argc<6||strcmp(argv[4],"--")){fprintf(stderr,"usage: sample_cost ADDR MODE ARG -- CMD [ARGS...]\n");return 2;}
 uint64_t addr=strtoull(argv[1],0,16); int mode=atoi(argv[2]); int ustack=atoi(argv[3]);
 int go[2]; pipe(go);
 pid_t pid=fork();
 if(!pid){char c; read(go[0],&c,1); execv(argv[5],argv+5); _exit(127);}
 struct perf_event_attr a; memset(&a,0,sizeof a);
 a.type=PERF_TYPE_BREAKPOINT; a.size=sizeof a; a.bp_type=HW_BREAKPOINT_W; a.bp_addr=addr; a.bp_len=8;
 a.sample_period=1; a.exclude_kernel=1; a.exclude_hv=1; a.enable_on_exec=1; a.disabled=1;
 if(mode>=1){ a.sample_type=PERF_SAMPLE_IP|PERF_SAMPLE_TID|PERF_SAMPLE_TIME|PERF_SAMPLE_ADDR|PERF_SAMPLE_ID|PERF_SAMPLE_CPU; a.sample_id_all=1; a.wakeup_events=1000000;}
 if(mode==2){ a.sample_type|=PERF_SAMPLE_CALLCHAIN; a.exclude_callchain_kernel=1; a.sample_max_stack=127;}
 if(mode==3){ a.sample_type|=PERF_SAMPLE_CALLCHAIN; a.exclude_callchain_kernel=1; a.sample_max_stack=atoi(argv[3]);}
 if(mode==5){ a.sample_type|=PERF_SAMPLE_REGS_USER|PERF_SAMPLE_STACK_USER; a.sample_regs_user=0xff0fff; a.sample_stack_user=ustack;}
 if(mode==4){ a.sample_type|=PERF_SAMPLE_REGS_USER|PERF_SAMPLE_STACK_USER; a.sample_regs_user=(1<<6)|(1<<7)|(1<<8); a.sample_stack_user=ustack;}
 int fd=syscall(SYS_perf_event_open,&a,pid,-1,-1,0); if(fd<0){perror("open");return 1;}
 pthread_t th; if(mode>=1){ void*m=mmap(0,(1+(getenv("PAGES")?atoi(getenv("PAGES")):2048))*4096,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); if(m==MAP_FAILED){perror("mmap");return 1;} mp=m; pthread_create(&th,0,rd,0);}
 double t0=now(); write(go[1],"x",1); int st; struct rusage ru; wait4(pid,&st,0,&ru); double t1=now();
 done=1; if(mode>=1) pthread_join(th,0); uint64_t c; read(fd,&c,8);
 printf("mode=%d ustack=%d hits=%lu %.3f s cpu %.3f bytes/hit=%lu\n",mode,ustack,c,t1-t0,ru.ru_utime.tv_sec+ru.ru_utime.tv_usec*1e-6+ru.ru_stime.tv_sec+ru.ru_stime.tv_usec*1e-6,bytes/c);
}
