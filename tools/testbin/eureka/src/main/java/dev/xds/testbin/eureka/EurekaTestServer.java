package dev.xds.testbin.eureka;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.netflix.eureka.server.EnableEurekaServer;
import org.springframework.context.annotation.Bean;
import org.springframework.security.config.Customizer;
import org.springframework.security.config.annotation.web.builders.HttpSecurity;
import org.springframework.security.core.userdetails.User;
import org.springframework.security.core.userdetails.UserDetailsService;
import org.springframework.security.provisioning.InMemoryUserDetailsManager;
import org.springframework.security.web.SecurityFilterChain;

/**
 * The Eureka server the project's tests run against (issue 13 section 2). Not part of the product.
 *
 * <p>Security: with {@code xds.testbin.user} empty every request is allowed; otherwise every request
 * needs HTTP basic auth with that user and {@code xds.testbin.password}. CSRF is off because Eureka's
 * REST API (register, heartbeat, status) is called with POST/PUT/DELETE by non-browser clients.
 */
@SpringBootApplication
@EnableEurekaServer
public class EurekaTestServer {

    public static void main(String[] args) {
        SpringApplication.run(EurekaTestServer.class, args);
    }

    @Bean
    SecurityFilterChain securityFilterChain(HttpSecurity http, @Value("${xds.testbin.user:}") String user)
            throws Exception {
        http.csrf(csrf -> csrf.disable());
        if (user.isEmpty()) {
            http.authorizeHttpRequests(auth -> auth.anyRequest().permitAll());
        } else {
            http.authorizeHttpRequests(auth -> auth.anyRequest().authenticated())
                .httpBasic(Customizer.withDefaults());
        }
        return http.build();
    }

    @Bean
    UserDetailsService userDetailsService(
            @Value("${xds.testbin.user:}") String user, @Value("${xds.testbin.password:}") String password) {
        if (user.isEmpty()) {
            return new InMemoryUserDetailsManager();
        }
        return new InMemoryUserDetailsManager(
            User.withUsername(user).password("{noop}" + password).roles("EUREKA").build());
    }
}
